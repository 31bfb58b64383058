"""onnx-whisper: a Whisper exported by ``voxbox convert --to onnx`` on ONNX Runtime.

The model directory holds ``encoder.onnx`` (features -> every decoder layer's cross-attention K/V),
``decoder.onnx`` (tokens + explicit past K/V -> last-token logits + present K/V), ``tokenizer.json``
and ``voxbox_onnx.json`` (dimensions, special ids, suppression lists); see
:mod:`voxbox.convert.onnx_export`.

Decoding is greedy (temperature 0) with openai-whisper's rules: blank and non-speech suppression,
paired, monotonic timestamp tokens, 30-second windows advanced to the last complete timestamp.
Language detection runs the decoder on ``<|startoftranscript|>`` over the language tokens of the
first window. Features, tokens, timestamp rules, the long-form loop and argument checks are the
shared Whisper core's (:mod:`voxbox.engines.asr.whisper`).

Execution provider: ``device="auto"`` takes the first of CUDA, ROCm, MIGraphX that this
onnxruntime build offers, else CPU; ``cuda``/``rocm``/``migraphx``/``cpu`` ask for one and fail
with :class:`DeviceError` if it is missing or ONNX Runtime silently falls back. The choice is
reported in ``EngineInfo.device`` and ``EngineInfo.extra["execution_provider"]``.

Stage timings: ``resample`` (only for non-16 kHz input), ``features`` (numpy log-mel), ``encode``
(encoder graph), ``decode`` (decoder graph steps and language detection).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.engines.asr.whisper.features import (
    CHUNK_FRAMES,
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    log_mel,
    pad_or_trim,
)
from voxbox.engines.asr.whisper.segments import DecodeResult, sequential_segments
from voxbox.engines.asr.whisper.timestamps import apply_timestamp_rules, log_softmax
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.engines.asr.whisper.validate import check_call, check_decoding
from voxbox.engines.base import cancellable
from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.errors import (
    BadInputError,
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedOperationError,
)
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
)

__all__ = ["PROVIDERS", "SPEC", "OnnxWhisperEngine", "OnnxWhisperOptions", "load", "models", "pick_providers"]

INSTALL_HINT = "pip install 'voxbox[onnx]'"

#: device kind -> ONNX Runtime execution provider, in "auto" preference order.
PROVIDERS: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "cpu": "CPUExecutionProvider",
}



@dataclass(frozen=True)
class OnnxWhisperOptions(Options):
    """Per-call options. Decoding is greedy: ``temperature`` may only be 0 and ``beam_size`` 1."""

    temperature: tuple[float, ...] | None = None
    beam_size: int | None = None
    without_timestamps: bool | None = None
    max_new_tokens: int | None = None
    suppress_blank: bool | None = None
    suppress_tokens: tuple[int, ...] | None = None

    def check(self) -> None:
        check_decoding(self)
        if self.temperature and self.temperature[0] != 0:
            raise UnsupportedOperationError("onnx-whisper decodes greedily (temperature 0) only", param="temperature")
        if self.beam_size not in (None, 1):
            raise UnsupportedOperationError("onnx-whisper decodes greedily (beam_size 1) only", param="beam_size")


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineUnavailableError(f"onnx-whisper needs onnxruntime ({exc})", install_hint=INSTALL_HINT) from None
    return ort


def pick_providers(device: str = "auto", available: list[str] | None = None
                   ) -> tuple[str, int, list[str | tuple[str, dict[str, int]]]]:
    """(device kind, device index, provider list for InferenceSession) for ``device``.

    This is the engine's one device seam: when a hardware planner decides the device it passes
    ``device="cuda:0"`` (or ``rocm``/``migraphx``/``cpu``) here.
    """
    avail = list(available if available is not None else _ort().get_available_providers())
    dev = (device or "auto").strip().lower()
    kind, _, idx = dev.partition(":")
    index = int(idx) if idx.isdigit() else 0
    if kind == "auto":
        for k in ("cuda", "rocm", "migraphx"):
            if PROVIDERS[k] in avail:
                kind = k
                break
        else:
            kind = "cpu"
    if kind == "rocm" and PROVIDERS["rocm"] not in avail and PROVIDERS["migraphx"] in avail:
        kind = "migraphx"  # onnxruntime >= 1.23 drives AMD GPUs through MIGraphX only
    if kind == "gpu":
        kind = next((k for k in ("cuda", "rocm", "migraphx") if PROVIDERS[k] in avail), "")
        if not kind:
            raise DeviceError(f"no GPU execution provider in this onnxruntime build (available: {', '.join(avail)})")
    if kind not in PROVIDERS:
        raise BadInputError(f"unknown device {device!r} for onnx-whisper; use auto, cpu, cuda[:N], rocm[:N] or migraphx[:N]",
                            param="device")
    if PROVIDERS[kind] not in avail:
        raise DeviceError(
            f"onnxruntime here has no {PROVIDERS[kind]} (available: {', '.join(avail)}); "
            f"install onnxruntime-gpu (CUDA) or onnxruntime-rocm / onnxruntime-migraphx (AMD)"
        )
    if kind == "cpu":
        return "cpu", 0, ["CPUExecutionProvider"]
    return kind, index, [(PROVIDERS[kind], {"device_id": index}), "CPUExecutionProvider"]


def _resolve_device(device: str, params: int) -> tuple[str, str]:
    """(device, reason): an explicit device is kept; ``auto`` asks the hardware planner
    (:func:`voxbox.hardware.plan.resolve_device`), which knows which GPUs ONNX Runtime's providers
    can drive; without the planner, ``auto`` stays ``auto`` (first GPU provider, else CPU)."""
    if device not in (None, "", "auto"):
        return device, f"device {device} was requested explicitly"
    try:
        from voxbox.hardware.plan import resolve_device
    except ImportError:
        return "auto", "no hardware planner; first available execution provider"
    comp = ComponentSpec("whisper", params=params, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                         backend="onnxruntime", kind="transformer", overhead_bytes=300 << 20)
    try:
        dev, _dtype, reason = resolve_device("auto", "onnx-whisper", comp)
    except Exception as exc:  # noqa: BLE001 - the planner is advisory; ORT's providers decide
        return "auto", f"planner failed ({type(exc).__name__}); first available execution provider"
    return str(dev or "auto"), str(reason)


class OnnxWhisperEngine:
    def __init__(self, model_dir: Path, *, device: str = "auto", threads: int = 0) -> None:
        ort = _ort()
        self.model_dir = model_dir
        cfg_path = model_dir / "voxbox_onnx.json"
        for name in ("encoder.onnx", "decoder.onnx", "tokenizer.json", "voxbox_onnx.json"):
            if not (model_dir / name).is_file():
                raise ModelNotFoundError(
                    f"{model_dir} is not an onnx-whisper model: {name} is missing (make one with `voxbox convert SRC OUT --to onnx`)",
                    param="model",
                )
        try:
            self.cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not read {cfg_path}: {exc}") from exc
        requested, reason = _resolve_device(device, int(self.cfg.get("params", 0)))
        try:
            kind, index, providers = pick_providers(requested)
        except DeviceError:
            if device not in (None, "", "auto"):
                raise
            # the planner chose a GPU this onnxruntime build cannot drive: take what it can
            kind, index, providers = pick_providers("auto")
            reason += f"; {requested} has no execution provider here, using {providers[0] if isinstance(providers[0], str) else providers[0][0]}"
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        try:
            self.encoder = ort.InferenceSession(str(model_dir / "encoder.onnx"), so, providers=providers)
            self.decoder = ort.InferenceSession(str(model_dir / "decoder.onnx"), so, providers=providers)
        except Exception as exc:
            msg = " ".join(str(exc).split())
            if kind != "cpu":
                raise DeviceError(f"onnx-whisper could not start on {PROVIDERS[kind]}: {msg}") from exc
            raise ModelLoadError(f"could not load ONNX graphs from {model_dir}: {msg}") from exc
        used = self.decoder.get_providers()[0]
        if used != PROVIDERS[kind]:
            raise DeviceError(f"onnxruntime fell back to {used} although {PROVIDERS[kind]} was requested")
        self.provider = used
        try:
            self.tok = WhisperTokenizer.from_dir(model_dir, vocab_size=int(self.cfg["vocab_size"]))
        except (ValueError, OSError, KeyError) as exc:
            raise ModelLoadError(f"could not load the tokenizer in {model_dir}: {exc}") from exc
        gen = self.cfg.get("generation", {})
        # The vocabulary decides, as in openai-whisper (generation_config's is_multilingual and
        # lang_to_id are not trusted: converted checkpoints sometimes carry a multilingual template).
        self.multilingual = self.tok.multilingual
        self.language_ids = {c: self.tok.language_ids.get(c, -1) for c in self.tok.languages}
        self.n_layers = int(self.cfg["n_layers"])
        self.n_heads = int(self.cfg["n_heads"])
        self.head_dim = int(self.cfg["head_dim"])
        self.n_mels = int(self.cfg["n_mels"])
        self.n_ctx = int(self.cfg.get("max_target_positions", 448))
        self.vocab_size = int(self.cfg["vocab_size"])
        suppress = gen.get("suppress_tokens")
        self.default_suppress = [int(t) for t in suppress] if suppress is not None else [-1]
        self.begin_suppress = self.tok.begin_suppress_tokens(gen.get("begin_suppress_tokens") or None)
        self.max_initial_timestamp_index = gen.get("max_initial_timestamp_index", 50)
        self._lock = threading.Lock()
        self.info = EngineInfo(
            name="onnx-whisper",
            task="asr",
            model=str(model_dir),
            device=kind if kind == "cpu" else f"{kind}:{index}",
            dtype=str(self.cfg.get("dtype", "float32")),
            sample_rate=SAMPLE_RATE,
            languages=tuple(self.language_ids),
            supports_translation=self.multilingual,
            supports_word_timestamps=False,
            max_concurrency=1,
            extra={"execution_provider": used, "providers": self.decoder.get_providers(),
                   "model_dir": str(model_dir), "threads": int(threads), "device_reason": reason},
        )

    # -- low level ----------------------------------------------------------------------------
    def encode(self, mel_window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_mels, 3000) or (batch, n_mels, 3000) log-mel -> cross K/V for the decoder."""
        x = mel_window if mel_window.ndim == 3 else mel_window[None]
        k, v = self.encoder.run(None, {"input_features": np.ascontiguousarray(x, dtype=np.float32)})
        return k, v

    def _empty_past(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.n_layers, batch, self.n_heads, 0, self.head_dim), np.float32)

    def step(self, ids: list[int] | np.ndarray, past: tuple[np.ndarray, np.ndarray] | None,
             cross: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Run the decoder on ``ids`` after ``past``: (last-token logits [batch, vocab], new past)."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim == 1:
            arr = arr[None]
        if past is None:
            past = (self._empty_past(arr.shape[0]), self._empty_past(arr.shape[0]))
        logits, pk, pv = self.decoder.run(None, {"input_ids": arr, "past_k": past[0], "past_v": past[1],
                                                 "cross_k": cross[0], "cross_v": cross[1]})
        return logits, (pk, pv)

    def suppress_list(self, suppress_tokens: list[int] | None) -> list[int]:
        """Never-sampled tokens: the call's list (default: the model's generation config) with ``-1``
        as the non-speech symbols, plus the special tokens."""
        return list(self.tok.suppress_tokens(self.default_suppress if suppress_tokens is None else suppress_tokens))

    def greedy(self, cross: tuple[np.ndarray, np.ndarray], prompt: list[int], *, max_new_tokens: int,
               timestamps: bool, suppress_tokens: list[int] | None, suppress_blank: bool = True,
               apply_suppress: bool = True) -> tuple[list[int], float]:
        """Greedy decoding of one window. Returns (generated tokens without eot, sum of log-probs).

        ``apply_suppress=False`` decodes the raw argmax (no suppression, no timestamp rules): the
        tests compare that with transformers' ``generate`` on random models.
        """
        eot = self.tok.eot
        suppress = np.array(self.suppress_list(suppress_tokens) if apply_suppress else [], dtype=np.int64)
        begin = np.array(self.begin_suppress, dtype=np.int64)
        out: list[int] = []
        total_lp = 0.0
        logits, past = self.step(prompt, None, cross)
        max_new = max(0, min(max_new_tokens, self.n_ctx - len(prompt)))
        for _ in range(max_new):
            row = logits[0].astype(np.float32).copy()
            if apply_suppress:
                if suppress_blank and not out and begin.size:
                    row[begin] = -np.inf
                if suppress.size:
                    row[suppress] = -np.inf
                if timestamps:
                    apply_timestamp_rules(row, out, eot=eot, no_timestamps=self.tok.no_timestamps,
                                             timestamp_begin=self.tok.timestamp_begin,
                                             max_initial_timestamp_index=self.max_initial_timestamp_index)
                else:
                    row[self.tok.timestamp_begin:] = -np.inf
            nxt = int(np.argmax(row))
            total_lp += float(log_softmax(row)[nxt])
            if nxt == eot:
                break
            out.append(nxt)
            if len(prompt) + len(out) >= self.n_ctx:
                break
            logits, past = self.step([nxt], past, cross)
        return out, total_lp

    def detect_language(self, cross: tuple[np.ndarray, np.ndarray]) -> tuple[str, float, dict[str, float]]:
        if not self.multilingual:
            return "en", 1.0, {"en": 1.0}
        logits, _ = self.step([self.tok.sot], None, cross)
        codes = list(self.language_ids)
        ids = np.array([self.language_ids[c] for c in codes])
        lp = log_softmax(logits[0][ids])
        probs = np.exp(lp)
        best = int(np.argmax(probs))
        return codes[best], float(probs[best]), {c: float(p) for c, p in zip(codes, probs)}

    def sot_sequence(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        return self.tok.sot_sequence(language, task, timestamps)

    # -- API ------------------------------------------------------------------------------------
    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        lang = check_call(audio, language, prompt, word_timestamps, task, engine="onnx-whisper", model=self.info.model,
                          languages=self.tok.languages, word_timestamps_supported=False)
        opts = build_options(OnnxWhisperOptions, options, **kwargs)
        timestamps = not opts.without_timestamps
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        with timings.measure("features"):
            mel = log_mel(samples, self.n_mels, padding=CHUNK_SAMPLES)
        content_frames = mel.shape[-1] - CHUNK_FRAMES
        first: tuple[np.ndarray, np.ndarray] | None = None
        lang_prob = 1.0
        if lang is None:
            # Detection sees the first 30 s of the padded log-mel, as the reference does.
            with self._lock:
                with timings.measure("encode"):
                    first = self.encode(pad_or_trim(mel[:, :CHUNK_FRAMES]))
                with timings.measure("decode"):
                    lang, lang_prob, _ = self.detect_language(first)
            if content_frames < CHUNK_FRAMES:
                # decoding a short window uses the content's log-mel zero-padded to 30 s (as
                # openai-whisper, faster-whisper and torch-whisper do), not the log-mel of padded silence
                first = None
        info = TranscriptionInfo(
            language=lang, language_probability=lang_prob, duration=duration, task=task,  # type: ignore[arg-type]
            options={"model": self.info.model, "beam_size": 1, "temperature": [0.0], "without_timestamps": not timestamps,
                     "device": self.info.device, "execution_provider": self.provider, "dtype": self.info.dtype},
            timings=timings,
        )
        decode = self._window_decoder(mel, first, self.sot_sequence(lang, task, timestamps), opts, timings)
        segments = sequential_segments(self.tok, decode, content_frames=content_frames, duration=duration,
                                       timestamps=timestamps, condition_on_previous_text=False,
                                       prompt=self.tok.prompt_tokens(prompt))
        return cancellable(segments, cancel), info

    def _window_decoder(self, mel: np.ndarray, first: tuple[np.ndarray, np.ndarray] | None, sot: list[int],
                        opts: OnnxWhisperOptions, timings: StageTimings) -> Callable[[int, int, list[int]], DecodeResult]:
        """``decode(seek, frames, previous)`` for the shared long-form loop (greedy, no fallback);
        the first window reuses the encoder output of language detection when it has one."""
        max_new = opts.max_new_tokens or self.n_ctx // 2
        suppress = list(opts.suppress_tokens) if opts.suppress_tokens is not None else None

        def decode(seek: int, frames: int, previous: list[int]) -> DecodeResult:
            prompt = self.tok.decoder_prompt(sot, previous, self.n_ctx)
            with self._lock:
                cross = first if seek == 0 else None  # the loop visits seek 0 once
                if cross is None:
                    with timings.measure("encode"):
                        cross = self.encode(pad_or_trim(mel[:, seek : seek + frames]))
                with timings.measure("decode"):
                    tokens, sum_lp = self.greedy(cross, prompt, max_new_tokens=max_new,
                                                 timestamps=not opts.without_timestamps, suppress_tokens=suppress,
                                                 suppress_blank=opts.suppress_blank is not False)
            return DecodeResult(tokens, sum_lp)

        return decode

    def components(self) -> list[ComponentSpec]:
        devices = ("cpu", "cuda", "rocm")
        params = int(self.cfg.get("params", 0))
        dtype = self.info.dtype or "float32"
        return [
            ComponentSpec(name="encoder", params=params // 2, devices=devices, dtypes=(dtype,), backend="onnxruntime",
                          kind="transformer"),
            ComponentSpec(name="decoder", params=params - params // 2, devices=devices, dtypes=(dtype,),
                          backend="onnxruntime", kind="transformer", overhead_bytes=64 << 20),
        ]

    def close(self) -> None:
        self.encoder = None  # type: ignore[assignment]
        self.decoder = None  # type: ignore[assignment]


def models() -> list[str]:
    return []


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None,
         threads: int | None = None) -> OnnxWhisperEngine:
    """Load an ONNX Whisper directory made by ``voxbox convert SRC OUT --to onnx``.

    ``device``: auto, cpu, cuda[:N], rocm[:N], migraphx[:N]. ``dtype`` must match the export
    (float32 or int8; it is fixed at conversion time). ``threads``: intra-op threads.
    """
    _ort()
    if not model:
        raise ModelNotFoundError("onnx-whisper needs a model directory (make one with `voxbox convert SRC OUT --to onnx`)",
                                 param="model")
    model_dir = Path(model).expanduser()
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"onnx-whisper model directory {model_dir} does not exist", param="model")
    engine = OnnxWhisperEngine(model_dir, device=device, threads=threads or (os.cpu_count() or 0))
    if dtype not in (None, "auto", engine.info.dtype):
        raise BadInputError(f"{model_dir} was exported as {engine.info.dtype}; dtype {dtype!r} needs another "
                            "`voxbox convert` (--quantize int8 for int8)", param="dtype")
    return engine


def _factory(req: LoadRequest) -> OnnxWhisperEngine:
    build_options(Options, req.options)  # no load options beyond the common ones
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads)


SPEC: EngineSpec[OnnxWhisperEngine, OnnxWhisperOptions] = EngineSpec(
    name="onnx-whisper", task="asr", factory=_factory, options=OnnxWhisperOptions,
    description="Whisper exported to ONNX (voxbox convert) on ONNX Runtime execution providers",
    requires=("onnxruntime", "tokenizers"), install_hint=INSTALL_HINT,
    components=(ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                              backend="onnxruntime", kind="transformer", overhead_bytes=300 * 2**20),),
    capabilities=Capabilities(streaming=True, translate=True),
    aliases=("onnx-whisper",),
)
