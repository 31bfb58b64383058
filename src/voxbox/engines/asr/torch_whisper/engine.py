"""The ``torch-whisper`` ASR engine: HF Whisper checkpoints on PyTorch (CUDA, ROCm, CPU).

Long audio follows the reference algorithm: log-mel over the whole clip (plus 30 s of padding),
then 30 s windows. With ``batch_size=1`` windows are decoded one after another, each seeking to the
last complete timestamp and conditioned on the previous text (openai-whisper's ``transcribe``).
With ``batch_size>1`` the clip is cut into consecutive 30 s windows decoded ``batch_size`` at a time
without previous-text conditioning (like transformers' chunked pipeline); segment times are offset
by each window's start. Temperature fallback on compression ratio and average log-probability
works in both modes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner, WindowResult
from voxbox.engines.asr.torch_whisper.features import CHUNK_FRAMES, CHUNK_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, log_mel
from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims, load_weights
from voxbox.engines.asr.torch_whisper.tokenizer import WhisperTokenizer
from voxbox.engines.base import cancellable
from voxbox.engines.spec import build_options
from voxbox.errors import BadInputError, DeviceError, ModelLoadError, ModelNotFoundError, UnsupportedOperationError
from voxbox.types import Audio, CancelToken, ComponentSpec, EngineInfo, Segment, StageTimings, TranscriptionInfo

__all__ = ["TorchWhisperEngine", "TranscribeOptions", "load", "load_checkpoint"]

TIME_PRECISION = 0.02  # seconds per timestamp token
INPUT_STRIDE = 2  # mel frames per encoder position


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-call options (``None`` in a call means the default here)."""

    beam_size: int = 1
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float | None = None
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    without_timestamps: bool = False
    max_new_tokens: int | None = None  # per window; default: max_target_positions // 2
    batch_size: int = 1
    suppress_blank: bool = True
    seed: int = 0


def _option_names() -> set[str]:
    return {f.name for f in fields(TranscribeOptions)}


def compression_ratio(text: str) -> float:
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def _load_state(directory: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = directory / "model.safetensors"
    if single.is_file():
        files = [single]
    else:
        index = _read_json(directory / "model.safetensors.index.json")
        files = sorted({directory / f for f in index.get("weight_map", {}).values()})
    if not files:
        raise ModelLoadError(f"{directory} has no model.safetensors")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f), device=str(device)))
    return state


def load_checkpoint(path: str | Path, device: torch.device, dtype: torch.dtype) -> tuple[Whisper, WhisperTokenizer, dict]:
    """(model, tokenizer, generation config) from an HF checkpoint directory."""
    directory = Path(path)
    if not directory.is_dir():
        raise ModelNotFoundError(f"torch-whisper needs a local checkpoint directory; {str(path)!r} is not one", param="model")
    config = _read_json(directory / "config.json")
    if not config:
        raise ModelLoadError(f"{directory} has no config.json")
    if not (directory / "tokenizer.json").is_file():
        raise ModelLoadError(f"{directory} has no tokenizer.json")
    try:
        dims = WhisperDims.from_config(config)
        with torch.device("meta"):
            model = Whisper(dims)
        load_weights(model, _load_state(directory, device), dtype, device)
        tokenizer = WhisperTokenizer.from_dir(directory, dims.vocab_size)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/tokenizers raise their own types for corrupt files
        raise ModelLoadError(f"could not load Whisper checkpoint {directory}: {exc}") from exc
    gen = _read_json(directory / "generation_config.json")
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if key not in gen and config.get(key) is not None:
            gen[key] = config[key]
    return model.eval(), tokenizer, gen


class TorchWhisperEngine:
    """An :class:`~voxbox.engines.base.ASREngine` over a loaded model and tokenizer."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, generation: dict, info: EngineInfo,
                 use_graphs: bool | None = None, defaults: TranscribeOptions | None = None,
                 compile: bool | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.runner = Runner(model, tokenizer, use_graphs=use_graphs, compile=compile)
        self.defaults = defaults or TranscribeOptions()
        tok = tokenizer
        suppress = gen_suppress = generation.get("suppress_tokens")
        if gen_suppress is None or -1 in gen_suppress:
            suppress = tok.non_speech_tokens
        extra = [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]
        self.suppress = tuple(sorted({t for t in list(suppress) + extra if t is not None}))
        begin = generation.get("begin_suppress_tokens")
        self.begin_suppress = tuple(begin) if begin is not None else (tok.encode(" ")[0], tok.eot)
        self.max_initial_timestamp_index = generation.get("max_initial_timestamp_index", 50)

    # ------------------------------------------------------------------ protocol
    def components(self) -> list[ComponentSpec]:
        params = sum(p.numel() for p in self.model.parameters())
        for layer in self.model.decoder.layers:  # fused GPU layout keeps these outside parameters()
            for pair in (layer.fused_qkv, layer.fused_cross_q):
                params += sum(t.numel() for t in pair) if pair is not None else 0
        return [ComponentSpec(name="whisper", params=params, devices=("cpu", "cuda", "rocm"),
                              dtypes=("float16", "bfloat16", "float32"), backend="torch", kind="transformer")]

    def close(self) -> None:
        self.runner.clear()
        self.model = None  # type: ignore[assignment]

    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        from voxbox.engines.asr.torch_whisper import TorchWhisperOptions

        given = build_options(TorchWhisperOptions, options, **kwargs).given()
        opts = self._validate(audio, language, word_timestamps, task, given)
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample  # PyAV, only when needed

            samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        with torch.inference_mode():
            with timings.measure("features"):
                x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.runner.device)
                mel = log_mel(x, self.model.dims.n_mels, padding=CHUNK_SAMPLES)
                self._sync()
            lang, lang_prob = language, None
            if self.tokenizer.multilingual and language is None:
                with timings.measure("encode"):
                    enc = self.runner.encode(mel[None, :, :CHUNK_FRAMES])
                    self._sync()
                with timings.measure("decode"):
                    probs = self.runner.detect_language(enc)[0]
                lang = max(probs, key=probs.get)
                lang_prob = probs[lang]
            elif not self.tokenizer.multilingual:
                lang, lang_prob = "en", 1.0
        info = TranscriptionInfo(language=lang, language_probability=lang_prob, duration=duration, task=task,  # type: ignore[arg-type]
                                 options={**asdict(opts), "prompt": prompt}, timings=timings)
        content_frames = mel.shape[-1] - CHUNK_FRAMES
        gen = self._batched if opts.batch_size > 1 else self._sequential
        return cancellable(gen(mel, content_frames, lang, task, prompt, opts, timings), cancel), info

    # ------------------------------------------------------------------ validation
    def _validate(self, audio, language, word_timestamps, task, options) -> TranscribeOptions:
        if not isinstance(audio, Audio):
            raise BadInputError("audio must be a voxbox Audio", param="audio")
        if audio.samples.size == 0:
            raise BadInputError("audio is empty", param="audio")
        if task not in ("transcribe", "translate"):
            raise BadInputError(f"task must be 'transcribe' or 'translate', got {task!r}", param="task")
        if task == "translate" and not self.tokenizer.multilingual:
            raise UnsupportedOperationError("this model is English-only and cannot translate", param="task")
        if word_timestamps:
            raise UnsupportedOperationError("torch-whisper has no word timestamps yet", param="word_timestamps")
        if language is not None:
            if not isinstance(language, str) or language not in self.tokenizer.languages:
                raise BadInputError(f"unsupported language {language!r} for this model", param="language")
        unknown = set(options) - _option_names()
        if unknown:
            raise BadInputError(f"unknown option(s) for torch-whisper: {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        given = {k: v for k, v in options.items() if v is not None}
        if "temperature" in given:
            t = given["temperature"]
            given["temperature"] = tuple(float(v) for v in t) if isinstance(t, (list, tuple)) else (float(t),)
        try:
            opts = replace(self.defaults, **given)
        except TypeError as exc:
            raise BadInputError(str(exc)) from None
        if int(opts.beam_size) < 1 or int(opts.batch_size) < 1 or int(opts.best_of) < 1:
            raise BadInputError("beam_size, best_of and batch_size must be >= 1", param="beam_size")
        if any(t < 0 for t in opts.temperature) or not opts.temperature:
            raise BadInputError("temperature must be >= 0", param="temperature")
        return opts

    # ------------------------------------------------------------------ decoding
    def _sync(self) -> None:
        if self.runner.device.type == "cuda":
            torch.cuda.synchronize()

    def _rules(self, opts: TranscribeOptions) -> Rules:
        return Rules(suppress=self.suppress, begin_suppress=self.begin_suppress if opts.suppress_blank else (),
                     timestamps=not opts.without_timestamps,
                     max_initial_timestamp_index=self.max_initial_timestamp_index)

    def _prompt(self, lang: str | None, task: str, opts: TranscribeOptions, previous: list[int]) -> list[int]:
        seq = self.tokenizer.sot_sequence(lang, task, timestamps=not opts.without_timestamps)
        if previous:
            keep = self.model.dims.max_target_positions // 2 - 1
            seq = [self.tokenizer.sot_prev] + previous[-keep:] + seq
        return seq

    def _decode_with_fallback(self, enc: torch.Tensor, prompt: list[int], opts: TranscribeOptions,
                              timings: StageTimings) -> list[WindowResult]:
        """Decode rows of ``enc``; rows whose text repeats (compression ratio) or is unlikely
        (average log-prob) are decoded again at the next temperature."""
        rules = self._rules(opts)
        max_new = opts.max_new_tokens or self.model.dims.max_target_positions // 2
        results: list[WindowResult | None] = [None] * enc.shape[0]
        todo = list(range(enc.shape[0]))
        gen = torch.Generator(device=self.runner.device).manual_seed(opts.seed)
        with timings.measure("decode"):
            for t in opts.temperature:
                rows = enc if len(todo) == enc.shape[0] else enc[todo]
                out = self.runner.decode(rows, prompt, rules, max_new, temperature=t, beam_size=opts.beam_size,
                                         best_of=opts.best_of, patience=opts.patience,
                                         length_penalty=opts.length_penalty, generator=gen)
                retry = []
                for i, r in zip(todo, out):
                    results[i] = r
                    text = self.tokenizer.decode(r.tokens)
                    bad = (opts.compression_ratio_threshold is not None
                           and compression_ratio(text) > opts.compression_ratio_threshold)
                    bad |= opts.log_prob_threshold is not None and r.avg_logprob < opts.log_prob_threshold
                    if (opts.no_speech_threshold is not None and r.no_speech_prob is not None
                            and r.no_speech_prob > opts.no_speech_threshold):
                        bad = False  # silence: keep it, it will be skipped
                    if bad:
                        retry.append(i)
                todo = retry
                if not todo:
                    break
        return results  # type: ignore[return-value]

    def _skip(self, r: WindowResult, opts: TranscribeOptions) -> bool:
        if opts.no_speech_threshold is None or r.no_speech_prob is None:
            return False
        skip = r.no_speech_prob > opts.no_speech_threshold
        if opts.log_prob_threshold is not None and r.avg_logprob > opts.log_prob_threshold:
            skip = False
        return skip

    def _split(self, r: WindowResult, time_offset: float, window_s: float
               ) -> tuple[list[tuple[float, float, list[int]]], list[int], int | None]:
        """Timestamp tokens -> (segments [(start, end, tokens)], unfinished tail tokens, frames to seek).

        The reference algorithm: segments end at consecutive timestamp pairs; text after the last
        pair is left for the next window (seek to the last timestamp); ``None`` seeks a whole window.
        """
        tb = self.tokenizer.timestamp_begin
        tokens = r.tokens
        is_ts = [t >= tb for t in tokens]
        single_ending = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_ending else [])
            pieces, last = [], 0
            for cur in slices:
                sl = tokens[last:cur]
                pieces.append((time_offset + (sl[0] - tb) * TIME_PRECISION,
                               time_offset + (sl[-1] - tb) * TIME_PRECISION, sl))
                last = cur
            if single_ending:
                return pieces, [], None
            return pieces, tokens[last:], (tokens[last - 1] - tb) * INPUT_STRIDE
        duration = window_s
        stamps = [t for t in tokens if t >= tb]
        if stamps and stamps[-1] != tb:
            duration = (stamps[-1] - tb) * TIME_PRECISION
        return [(time_offset, time_offset + duration, tokens)], [], None

    def _segment(self, seg_id: int, start: float, end: float, tokens: list[int], r: WindowResult) -> Segment | None:
        text = self.tokenizer.decode(tokens)
        if not text.strip():
            return None
        return Segment(id=seg_id, start=round(start, 3), end=round(end, 3), text=text, tokens=list(tokens),
                       avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                       compression_ratio=compression_ratio(self.tokenizer.decode(r.tokens)), temperature=r.temperature)

    def _sequential(self, mel, content_frames, lang, task, prompt, opts, timings) -> Iterator[Segment]:
        tok = self.tokenizer
        all_tokens: list[int] = tok.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        reset_since = 0
        seek, seg_id = 0, 0
        while seek < content_frames:
            with torch.inference_mode():
                time_offset = seek * FRAME_SECONDS
                size = min(CHUNK_FRAMES, content_frames - seek)
                window = mel[:, seek : seek + size]
                if size < CHUNK_FRAMES:
                    window = torch.nn.functional.pad(window, (0, CHUNK_FRAMES - size))
                with timings.measure("encode"):
                    enc = self.runner.encode(window[None])
                    self._sync()
                r = self._decode_with_fallback(enc, self._prompt(lang, task, opts, all_tokens[reset_since:]), opts, timings)[0]
            window_s = size * FRAME_SECONDS
            if self._skip(r, opts):
                seek += size
                continue
            pieces, _, seek_frames = self._split(r, time_offset, window_s)
            out_tokens: list[int] = []
            for start, end, toks in pieces:
                seg = self._segment(seg_id, start, min(end, time_offset + window_s), toks, r)
                out_tokens += toks
                if seg is not None:
                    seg_id += 1
                    yield seg
            seek += size if seek_frames is None else max(1, seek_frames)
            all_tokens += out_tokens
            if not opts.condition_on_previous_text or r.temperature > 0.5:
                reset_since = len(all_tokens)

    def _batched(self, mel, content_frames, lang, task, prompt, opts, timings) -> Iterator[Segment]:
        tok = self.tokenizer
        previous = tok.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        starts = list(range(0, max(content_frames, 1), CHUNK_FRAMES))
        seg_id = 0
        for b0 in range(0, len(starts), opts.batch_size):
            group = starts[b0 : b0 + opts.batch_size]
            with torch.inference_mode():
                # a short last window is zero-padded log-mel, as in _sequential and the reference
                # transcribe loops (openai-whisper, faster-whisper), not the log-mel of padded silence
                windows = torch.stack([
                    torch.nn.functional.pad(w, (0, CHUNK_FRAMES - w.shape[-1]))
                    for w in (mel[:, s : min(s + CHUNK_FRAMES, content_frames)] for s in group)
                ])
                with timings.measure("encode"):
                    enc = self.runner.encode(windows)
                    self._sync()
                results = self._decode_with_fallback(enc, self._prompt(lang, task, opts, previous), opts, timings)
            for s, r in zip(group, results):
                if self._skip(r, opts):
                    continue
                size = min(CHUNK_FRAMES, content_frames - s)
                offset, window_s = s * FRAME_SECONDS, size * FRAME_SECONDS
                pieces, tail, _ = self._split(r, offset, window_s)
                if any(t < self.tokenizer.timestamp_begin for t in tail):  # no next window re-decodes it
                    pieces.append((pieces[-1][1], offset + window_s, tail))
                for start, end, toks in pieces:
                    seg = self._segment(seg_id, start, min(end, offset + window_s), toks, r)
                    if seg is not None:
                        seg_id += 1
                        yield seg


def _pick_device(device: str) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("rocm", "hip"):
        device = "cuda"  # ROCm builds of torch expose HIP devices as "cuda"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but torch sees no CUDA/ROCm GPU")
    return dev


_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, **options: Any) -> TorchWhisperEngine:
    """Load an HF Whisper checkpoint directory (config.json, model.safetensors, tokenizer.json).

    ``dtype``: float16 / bfloat16 / float32; default float16 on GPU, float32 on CPU.
    ``options``: ``use_graphs`` (default: on for CUDA/ROCm) and any per-call default of
    :class:`TranscribeOptions` (e.g. ``batch_size``, ``beam_size``).
    """
    if not model:
        raise ModelNotFoundError("torch-whisper needs --model PATH (an HF Whisper checkpoint directory)", param="model")
    plan_reason = None
    if device in (None, "", "auto"):
        # The hardware planner: detection, cached probe verdicts and quirks (fp16 where bf16 hangs).
        from voxbox.engines.asr.torch_whisper import SPEC
        from voxbox.engines.placement import auto_plan

        placed = auto_plan("torch-whisper", SPEC.components).main
        device, plan_reason = placed.device or "cpu", placed.reason
        if dtype is None and placed.dtype in _DTYPES and device != "cpu":
            dtype = placed.dtype
    dev = _pick_device(device)
    if dtype is None:
        tdtype = torch.float16 if dev.type == "cuda" else torch.float32
    elif dtype in _DTYPES:
        tdtype = _DTYPES[dtype]
    else:
        raise BadInputError(f"unsupported dtype {dtype!r}; use float16, bfloat16 or float32", param="dtype")
    if dev.type == "cpu" and tdtype == torch.float16:
        raise BadInputError("float16 is not supported on the CPU; use float32 or bfloat16", param="dtype")
    use_graphs = options.pop("use_graphs", None)
    compile_step = options.pop("compile", None)  # torch.compile the GPU decode step (default: CUDA + Triton)
    unknown = set(options) - _option_names()
    if unknown:
        raise BadInputError(f"unknown torch-whisper option(s): {', '.join(sorted(unknown))}")
    defaults = replace(TranscribeOptions(), **options)
    m, tok, gen = load_checkpoint(model, dev, tdtype)
    if dev.type == "cuda":
        m.fuse_for_decoding()  # fewer kernels per step; the CPU keeps transformers' exact op order
    info = EngineInfo(
        name="torch-whisper", task="asr", model=str(model), device=str(dev), dtype=str(tdtype).replace("torch.", ""),
        sample_rate=SAMPLE_RATE, languages=tok.languages, supports_translation=tok.multilingual,
        supports_word_timestamps=False, max_concurrency=1,
        extra={"cuda_graphs": bool(use_graphs if use_graphs is not None else dev.type == "cuda")},
    )
    engine = TorchWhisperEngine(m, tok, gen, info, use_graphs=use_graphs, defaults=defaults, compile=compile_step)
    engine.info.extra["compiled_step"] = bool(engine.runner.fast is not None and engine.runner.fast.compiled)
    if plan_reason:
        engine.info.extra["device_reason"] = plan_reason
    return engine
