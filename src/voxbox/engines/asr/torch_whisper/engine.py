"""The ``torch-whisper`` ASR engine: HF Whisper checkpoints on PyTorch (CUDA, ROCm, CPU).

Long audio follows the reference algorithm: log-mel over the whole clip (plus 30 s of padding),
then 30 s windows. With ``batch_size=1`` windows are decoded one after another, each seeking to the
last complete timestamp and conditioned on the previous text (openai-whisper's ``transcribe``, run
by the shared core's :func:`~voxbox.engines.asr.whisper.segments.sequential_segments`). With
``batch_size>1`` the clip is cut into consecutive 30 s windows decoded ``batch_size`` at a time
without previous-text conditioning (like transformers' chunked pipeline); segment times are offset
by each window's start. Temperature fallback on compression ratio and average log-probability
works in both modes. Features, tokens, timestamp rules, segment building and argument checks come
from :mod:`voxbox.engines.asr.whisper`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from voxbox.engines.asr.torch_whisper.batcher import WindowBatcher
from voxbox.engines.asr.torch_whisper.checkpoint import load_checkpoint
from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner
from voxbox.engines.asr.torch_whisper.model import Whisper
from voxbox.engines.asr.torch_whisper.windows import WindowRequest, WindowResult
from voxbox.engines.asr.whisper.alignment import WordAligner
from voxbox.engines.asr.whisper.features import (
    CHUNK_FRAMES,
    CHUNK_SAMPLES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    log_mel_torch,
)
from voxbox.engines.asr.whisper.segments import (
    DecodeResult,
    is_silence,
    needs_fallback,
    sequential_segments,
    window_segments,
)
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.engines.asr.whisper.validate import check_call
from voxbox.engines.base import Batchable, cancellable
from voxbox.engines.placement import DTYPES, torch_device, torch_dtype
from voxbox.engines.spec import build_options
from voxbox.errors import BadInputError, ModelNotFoundError
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
)

__all__ = ["TorchWhisperEngine", "TranscribeOptions", "load", "load_checkpoint"]


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


def _typed_options(values: dict[str, Any]) -> dict[str, Any]:
    """Per-call option values checked and typed by the engine's public ``TorchWhisperOptions``."""
    from voxbox.engines.asr.torch_whisper import TorchWhisperOptions

    return build_options(TorchWhisperOptions, values).given()


class TorchWhisperEngine(Batchable):
    """An :class:`~voxbox.engines.base.ASREngine` over a loaded model and tokenizer."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, generation: dict[str, Any], info: EngineInfo,
                 use_graphs: bool | None = None, defaults: TranscribeOptions | None = None,
                 compile: bool | None = None, kernels: bool | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.runner = Runner(model, tokenizer, use_graphs=use_graphs, compile=compile, kernels=kernels)
        self.defaults = defaults or TranscribeOptions()
        self.suppress = tokenizer.suppress_tokens(generation.get("suppress_tokens"))
        self.begin_suppress = tokenizer.begin_suppress_tokens(generation.get("begin_suppress_tokens"))
        self.max_initial_timestamp_index: int | None = generation.get("max_initial_timestamp_index", 50)
        dims = model.dims
        heads = generation.get("alignment_heads") or [  # openai-whisper's default: the upper half's heads
            (layer, h) for layer in range(dims.decoder_layers // 2, dims.decoder_layers)
            for h in range(dims.decoder_heads)]
        self.alignment_heads = tuple((int(layer), int(h)) for layer, h in heads)
        self._scheduler: Any = None  # the runtime's batch scheduler, when batching across requests
        self._runner_lock = threading.Lock()  # the runner's own calls: callers vs the scheduler thread

    # ------------------------------------------------------------------ protocol
    def components(self) -> list[ComponentSpec]:
        params = sum(p.numel() for p in self.model.parameters())
        for layer in self.model.decoder.blocks:  # fused GPU layout keeps these outside parameters()
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

        lang = check_call(audio, language, prompt, word_timestamps, task, engine="torch-whisper",
                          model=self.info.model, languages=self.tokenizer.languages, word_timestamps_supported=True)
        opts = replace(self.defaults, **build_options(TorchWhisperOptions, options, **kwargs).given())
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample  # PyAV, only when needed

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        with torch.inference_mode():
            with timings.measure("features"):
                x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
                if self.runner.device.type == "cuda":  # pinned + async: no wait behind queued GPU work
                    x = x.pin_memory().to(self.runner.device, non_blocking=True)
                mel = log_mel_torch(x, self.model.dims.n_mels, padding=CHUNK_SAMPLES)
                self._sync()
            lang, lang_prob = self._language(mel, lang, timings)
        info = TranscriptionInfo(language=lang, language_probability=lang_prob, duration=duration, task=task,  # type: ignore[arg-type]
                                 options={**asdict(opts), "prompt": prompt}, timings=timings)
        content_frames = mel.shape[-1] - CHUNK_FRAMES
        words = self._aligner(lang, task, timings) if word_timestamps else None
        segments: Iterator[Segment]
        cancel = cancel or CancelToken()
        if opts.batch_size > 1:
            segments = self._batched(mel, content_frames, duration, lang, task, prompt, opts, timings, words, cancel)
        else:
            segments = sequential_segments(
                self.tokenizer, self._window_decoder(mel, lang, task, opts, timings, cancel),
                content_frames=content_frames,
                duration=duration, timestamps=not opts.without_timestamps,
                condition_on_previous_text=opts.condition_on_previous_text,
                prompt=self.tokenizer.prompt_tokens(prompt), no_speech_threshold=opts.no_speech_threshold,
                log_prob_threshold=opts.log_prob_threshold, words=words)
        return cancellable(segments, cancel), info

    # ------------------------------------------------------------------ decoding
    def _sync(self) -> None:
        """Wait for the GPU (exact stage timings), unless batching across requests: a device-wide
        wait would hold each arriving request behind the whole batch's queued work (encoder passes,
        decoder steps), spreading arrivals into many small admissions; the stage times then count
        launches only and the window's queueing shows under ``decode``."""
        if self.runner.device.type == "cuda" and self._scheduler is None:
            torch.cuda.synchronize()

    def _language(self, mel: torch.Tensor, language: str | None, timings: StageTimings) -> tuple[str, float | None]:
        """(language, probability): the caller's, "en" for English-only models, else detected on the
        first 30 s."""
        if not self.tokenizer.multilingual:
            return "en", 1.0
        if language is not None:
            return language, None
        with timings.measure("encode"), self._runner_lock:
            enc = self.runner.encode(mel[None, :, :CHUNK_FRAMES])
            self._sync()
        with timings.measure("decode"), self._runner_lock:
            probs = self.runner.detect_language(enc)[0]
        best = max(probs, key=lambda code: probs[code])
        return best, probs[best]

    def _aligner(self, lang: str | None, task: str, timings: StageTimings) -> WordAligner:
        """Word timestamps for one call: the alignment heads' cross-attention on each window."""
        def score(enc: torch.Tensor, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode(), timings.measure("align"), self._runner_lock:
                return self.runner.alignment_scores(enc, tokens, self.alignment_heads)

        return WordAligner(self.tokenizer, score, self.tokenizer.sot_sequence(lang, task, timestamps=True), lang)

    def _rules(self, opts: TranscribeOptions) -> Rules:
        return Rules(suppress=self.suppress, begin_suppress=self.begin_suppress if opts.suppress_blank else (),
                     timestamps=not opts.without_timestamps,
                     max_initial_timestamp_index=self.max_initial_timestamp_index)

    def _prompt(self, lang: str | None, task: str, opts: TranscribeOptions, previous: list[int]) -> list[int]:
        seq = self.tokenizer.sot_sequence(lang, task, timestamps=not opts.without_timestamps)
        return self.tokenizer.decoder_prompt(seq, previous, self.model.dims.max_target_positions)

    @staticmethod
    def _window(mel: torch.Tensor, seek: int, frames: int) -> torch.Tensor:
        """``frames`` mel frames from ``seek``, zero-padded *log-mel* to 30 s (as openai-whisper's and
        faster-whisper's loops do; not the log-mel of padded silence)."""
        window = mel[:, seek : seek + frames]
        return torch.nn.functional.pad(window, (0, CHUNK_FRAMES - frames)) if frames < CHUNK_FRAMES else window

    def _decode_with_fallback(self, enc: torch.Tensor, prompt: list[int], opts: TranscribeOptions,
                              timings: StageTimings) -> list[DecodeResult]:
        """Decode rows of ``enc``; rows whose text repeats (compression ratio) or is unlikely
        (average log-prob) are decoded again at the next temperature."""
        rules = self._rules(opts)
        max_new = opts.max_new_tokens or self.model.dims.max_target_positions // 2
        results: list[DecodeResult] = []
        todo = list(range(enc.shape[0]))
        gen = torch.Generator(device=self.runner.device).manual_seed(opts.seed)
        with timings.measure("decode"):
            for t in opts.temperature:
                rows = enc if len(todo) == enc.shape[0] else enc[todo]
                out = self.runner.decode(rows, prompt, rules, max_new, temperature=t, beam_size=opts.beam_size,
                                         best_of=opts.best_of, patience=opts.patience,
                                         length_penalty=opts.length_penalty, generator=gen)
                if not results:
                    results = out
                retry = []
                for i, r in zip(todo, out, strict=True):
                    results[i] = r
                    if needs_fallback(r, self.tokenizer.decode(r.tokens),
                                      compression_ratio_threshold=opts.compression_ratio_threshold,
                                      log_prob_threshold=opts.log_prob_threshold,
                                      no_speech_threshold=opts.no_speech_threshold):
                        retry.append(i)
                todo = retry
                if not todo:
                    break
        return results

    # ------------------------------------------------------------------ batching across requests
    def batcher(self, config: Any) -> WindowBatcher:
        """The runtime's scheduler drives this: the windows of every transcription in flight are
        decoded together, joining and leaving at any decoder step (see ``batcher.py``). Its idle-time
        warm-up prefills the default prompts (no language given, no initial prompt)."""
        prompts = {ts: self.tokenizer.sot_sequence(None, "transcribe", timestamps=ts) for ts in (False, True)}
        return WindowBatcher(self.runner, int(config.max_batch), self._runner_lock, warm_prompts=prompts)

    def _submit(self, scheduler: Any, prompt: list[int], opts: TranscribeOptions, cancel: CancelToken, *,
                mel: torch.Tensor | None = None, enc: torch.Tensor | None = None, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> Iterator[WindowResult]:
        req = WindowRequest(prompt, self._rules(opts), opts.max_new_tokens or self.model.dims.max_target_positions // 2,
                            mel=mel, enc=enc, temperature=temperature, best_of=opts.best_of,
                            beam_size=opts.beam_size, patience=opts.patience, length_penalty=opts.length_penalty,
                            generator=generator)
        return scheduler.submit(req, cancel)

    def _generator(self, opts: TranscribeOptions) -> torch.Generator:
        return torch.Generator(device=self.runner.device).manual_seed(opts.seed)

    def _scheduled_result(self, scheduler: Any, first: Iterator[WindowResult], prompt: list[int],
                          opts: TranscribeOptions, cancel: CancelToken, timings: StageTimings,
                          gen: torch.Generator) -> DecodeResult:
        """A window's result from the scheduler at the first temperature, then decoded again at the
        next ones while it repeats or is unlikely (as :meth:`_decode_with_fallback`)."""
        with timings.measure("decode"):  # queueing and the window's share of the batched encoder included
            w = list(first)[0]
            enc, r = w.enc, w.result
            for t in opts.temperature[1:]:
                if not needs_fallback(r, self.tokenizer.decode(r.tokens),
                                      compression_ratio_threshold=opts.compression_ratio_threshold,
                                      log_prob_threshold=opts.log_prob_threshold,
                                      no_speech_threshold=opts.no_speech_threshold):
                    break
                r = list(self._submit(scheduler, prompt, opts, cancel, enc=enc, temperature=t, generator=gen))[0].result
        r.context = enc
        return r

    def _window_decoder(self, mel: torch.Tensor, lang: str | None, task: str, opts: TranscribeOptions,
                        timings: StageTimings, cancel: CancelToken) -> Callable[[int, int, list[int]], DecodeResult]:
        """``decode(seek, frames, previous)`` for the sequential loop: encode one window, decode it
        with fallback after the previous text (through the batch scheduler when there is one)."""
        scheduler = self._scheduler

        def decode(seek: int, frames: int, previous: list[int]) -> DecodeResult:
            if scheduler is not None:
                prompt = self._prompt(lang, task, opts, previous)
                gen = self._generator(opts)
                first = self._submit(scheduler, prompt, opts, cancel, mel=self._window(mel, seek, frames),
                                     temperature=opts.temperature[0], generator=gen)
                return self._scheduled_result(scheduler, first, prompt, opts, cancel, timings, gen)
            with torch.inference_mode():
                with timings.measure("encode"):
                    enc = self.runner.encode(self._window(mel, seek, frames)[None])
                    self._sync()
                r = self._decode_with_fallback(enc, self._prompt(lang, task, opts, previous), opts, timings)[0]
            r.context = enc  # for word alignment
            return r

        return decode

    def _batched(self, mel: torch.Tensor, content_frames: int, duration: float, lang: str | None, task: str,
                 prompt: str | None, opts: TranscribeOptions, timings: StageTimings,
                 words: WordAligner | None, cancel: CancelToken) -> Iterator[Segment]:
        previous = self.tokenizer.prompt_tokens(prompt)
        starts = list(range(0, content_frames, CHUNK_FRAMES))
        if self._scheduler is not None:
            yield from self._batched_scheduled(mel, starts, content_frames, duration,
                                               self._prompt(lang, task, opts, previous), opts, timings, words, cancel)
            return
        seg_id = 0
        for b0 in range(0, len(starts), opts.batch_size):
            group = starts[b0 : b0 + opts.batch_size]
            sizes = [min(CHUNK_FRAMES, content_frames - s) for s in group]
            with torch.inference_mode():
                windows = torch.stack([self._window(mel, s, n) for s, n in zip(group, sizes, strict=True)])
                with timings.measure("encode"):
                    enc = self.runner.encode(windows)
                    self._sync()
                results = self._decode_with_fallback(enc, self._prompt(lang, task, opts, previous), opts, timings)
            for row, (s, n, r) in enumerate(zip(group, sizes, results, strict=True)):
                if is_silence(r, opts.no_speech_threshold, opts.log_prob_threshold):
                    continue
                r.context = enc[row : row + 1]
                segs, _, _ = window_segments(self.tokenizer, r, offset=s * FRAME_SECONDS, window_frames=n,
                                             duration=duration, timestamps=not opts.without_timestamps, seek=False,
                                             first_id=seg_id, words=words)
                yield from segs
                seg_id += len(segs)

    def _batched_scheduled(self, mel: torch.Tensor, starts: list[int], content_frames: int, duration: float,
                           prompt: list[int], opts: TranscribeOptions, timings: StageTimings,
                           words: WordAligner | None, cancel: CancelToken) -> Iterator[Segment]:
        """``batch_size`` windows of this file in flight in the scheduler at a time: when the oldest
        is read, the next window is submitted, so the file's windows decode continuously alongside
        other requests'. Segments come out in order."""
        scheduler = self._scheduler
        todo = deque(starts)
        flight: deque[tuple[int, int, torch.Generator, Iterator[WindowResult]]] = deque()
        seg_id = 0
        while todo or flight:
            while todo and len(flight) < opts.batch_size:
                s = todo.popleft()
                n = min(CHUNK_FRAMES, content_frames - s)
                gen = self._generator(opts)
                flight.append((s, n, gen, self._submit(scheduler, prompt, opts, cancel, mel=self._window(mel, s, n),
                                                       temperature=opts.temperature[0], generator=gen)))
            s, n, gen, first = flight.popleft()
            r = self._scheduled_result(scheduler, first, prompt, opts, cancel, timings, gen)
            if is_silence(r, opts.no_speech_threshold, opts.log_prob_threshold):
                continue
            segs, _, _ = window_segments(self.tokenizer, r, offset=s * FRAME_SECONDS, window_frames=n,
                                         duration=duration, timestamps=not opts.without_timestamps, seek=False,
                                         first_id=seg_id, words=words)
            yield from segs
            seg_id += len(segs)


def _placement(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype, str | None]:
    """(device, dtype, planner's reason): ``auto`` asks the hardware planner (detection, cached probe
    verdicts, quirks such as fp16 where bf16 hangs); default dtype float16 on a GPU, float32 on the CPU."""
    reason = None
    if device in (None, "", "auto"):
        from voxbox.engines.asr.torch_whisper import SPEC
        from voxbox.engines.placement import auto_plan

        placed = auto_plan("torch-whisper", SPEC.components).main
        device, reason = placed.device or "cpu", placed.reason
        if dtype in (None, "", "auto") and placed.dtype in DTYPES and device != "cpu":
            dtype = placed.dtype
    dev = torch_device(device)
    tdtype = torch_dtype(dtype) if dtype not in (None, "", "auto") else (
        torch.float16 if dev.type == "cuda" else torch.float32)
    if dev.type == "cpu" and tdtype == torch.float16:
        raise BadInputError("float16 is not supported on the CPU; use float32 or bfloat16", param="dtype")
    return dev, tdtype, reason


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None,
         **options: Any) -> TorchWhisperEngine:
    """Load an HF Whisper checkpoint directory (config.json, model.safetensors, tokenizer.json).

    ``dtype``: float16 / bfloat16 / float32; default float16 on GPU, float32 on CPU.
    ``options``: ``use_graphs`` (default: on for CUDA/ROCm), ``compile`` (torch.compile the GPU
    decode step; default: when Triton is importable), ``kernels`` (the Triton batch-1 step; default
    on NVIDIA GPUs of compute capability 9.0+, where it is the faster step; checked against eager
    at load) and any per-call default of
    :class:`TranscribeOptions` (e.g. ``batch_size``, ``beam_size``).
    """
    if not model:
        raise ModelNotFoundError("torch-whisper needs --model PATH (an HF Whisper checkpoint directory)", param="model")
    dev, tdtype, plan_reason = _placement(device, dtype)
    use_graphs = options.pop("use_graphs", None)
    compile_step = options.pop("compile", None)
    kernels = options.pop("kernels", None)
    defaults = replace(TranscribeOptions(), **_typed_options(options))
    m, tok, gen = load_checkpoint(model, dev, tdtype)
    if dev.type == "cuda":
        m.fuse_for_decoding()  # fewer kernels per step; the CPU keeps transformers' exact op order
    info = EngineInfo(
        name="torch-whisper", task="asr", model=str(model), device=str(dev), dtype=str(tdtype).replace("torch.", ""),
        sample_rate=SAMPLE_RATE, languages=tok.languages, supports_translation=tok.multilingual,
        supports_word_timestamps=True, max_concurrency=1,
        extra={"cuda_graphs": bool(use_graphs if use_graphs is not None else dev.type == "cuda")},
    )
    engine = TorchWhisperEngine(m, tok, gen, info, use_graphs=use_graphs, defaults=defaults, compile=compile_step,
                                kernels=kernels)
    engine.info.extra["compiled_step"] = bool(engine.runner.fast is not None and engine.runner.fast.compiled)
    engine.info.extra["triton_step"] = engine.runner.kstep is not None
    if engine.runner.kernel_error:
        engine.info.extra["triton_step_unavailable"] = engine.runner.kernel_error
    if plan_reason:
        engine.info.extra["device_reason"] = plan_reason
    return engine
