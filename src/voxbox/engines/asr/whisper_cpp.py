"""whisper-cpp: Whisper on whisper.cpp (ggml) through ``pywhispercpp`` (optional extra).

Models: any local ggml Whisper file (or a directory holding one, e.g. ``voxbox convert SRC OUT --to
ggml``), or ``tiny.en`` / ``base``: the bundled CTranslate2 weights converted to ggml once into the
cache (:mod:`voxbox.convert.ggml`), so the same weights as faster-whisper run with no download.

Where it runs: ``device="auto"`` asks the planner (:func:`voxbox.engines.placement.auto_device`),
which knows which GPU backends the loaded whisper.cpp library was built with (CUDA, HIP, Vulkan,
Metal) and gives a GPU only after a passing probe; the context's own log line
("whisper_backend_init_gpu: using ... backend" or "no GPU found") says where it really runs, and
``info.device`` reports that, not what was asked.

Segments are read as whisper.cpp produces them (its new-segment callback feeds a queue while
``whisper_full`` runs in a worker thread); the cancel token aborts it through its abort callback.
VAD: whisper.cpp's own Silero VAD with ``vad_model`` (a ggml Silero file), else the Silero VAD
that faster-whisper ships (speech spans transcribed one by one, times shifted back).

Stage timings: ``resample``, ``vad``, ``transcribe`` (whisper.cpp's encode + decode: it does not
report them apart through the binding).
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.engines.base import cancellable, validate_asr_call
from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.errors import BadInputError, DeviceError, ModelLoadError, ModelNotFoundError
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
    Word,
)

__all__ = ["SPEC", "WhisperCppEngine", "WhisperCppLoadOptions", "WhisperCppOptions", "load", "resolve_model_file"]

SAMPLE_RATE = 16000
_BUNDLED = {"tiny.en": "whisper-tiny.en", "base": "whisper-base"}
_DONE = object()


@dataclass(frozen=True)
class WhisperCppOptions(Options):
    """Per-call options (``None`` = whisper.cpp's default)."""

    beam_size: int | None = None  # None or 1: greedy; > 1: beam search
    temperature: float | None = None  # first temperature of whisper.cpp's fallback ladder (0.0)
    temperature_increment: float | None = None  # its step (0.2); 0 turns the fallback off
    no_speech_threshold: float | None = None
    vad_filter: bool | None = None  # skip non-speech (whisper.cpp's VAD with vad_model, else Silero via faster-whisper)
    max_segment_tokens: int | None = None
    condition_on_previous_text: bool | None = None  # False by default (whisper.cpp's no_context)

    def check(self) -> None:
        for name in ("beam_size", "max_segment_tokens"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BadInputError(f"{name} must be >= 1, got {v}", param=name)
        if self.temperature is not None and not 0.0 <= self.temperature <= 1.0:
            raise BadInputError(f"temperature must be in [0, 1], got {self.temperature}", param="temperature")


@dataclass(frozen=True)
class WhisperCppLoadOptions(Options):
    vad_model: str | None = None  # whisper.cpp's Silero VAD in ggml (ggml-silero-*.bin)
    flash_attn: bool | None = None


def resolve_model_file(model: str | None) -> tuple[str, Path]:
    """(model id, ggml file) for a bundled name, a ggml file or a directory holding one."""
    from voxbox.convert.ggml import is_ggml_file

    name = (model or "tiny.en").strip()
    if name in ("tiny.en", "whisper-cpp", "default", "base"):
        from voxbox.convert.ggml import bundled_ggml

        name = "base" if name == "base" else "tiny.en"
        return name, bundled_ggml(name)
    p = Path(name).expanduser()
    if p.is_dir():
        found = sorted(f for f in p.glob("*.bin") if is_ggml_file(f))
        if len(found) != 1:
            raise ModelNotFoundError(f"{p} holds {len(found)} ggml Whisper files; name one", param="model")
        p = found[0]
    if not p.is_file():
        raise ModelNotFoundError(f"no ggml Whisper model at {name!r} (a ggml .bin file, a directory holding one, "
                                 "tiny.en or base)", param="model")
    if not is_ggml_file(p):
        raise ModelLoadError(f"{p.name} is not a whisper.cpp ggml model (wrong magic)")
    from voxbox.convert.ggml import check_ggml_file

    try:
        check_ggml_file(p)  # whisper.cpp crashes on a truncated file instead of failing
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"whisper.cpp could not load {p.name}: {exc}") from None
    return str(p), p


def _words(pw: Any, ctx: Any, i: int, offset: float) -> list[Word]:
    """Words from whisper.cpp's token timestamps: tokens joined until the next leading space."""
    eot = pw.whisper_token_eot(ctx)
    words: list[Word] = []
    cur: list[tuple[str, float, float, float]] = []
    for j in range(pw.whisper_full_n_tokens(ctx, i)):
        data = pw.whisper_full_get_token_data(ctx, i, j)
        if data.id >= eot:
            continue
        text = pw.whisper_full_get_token_text(ctx, i, j)
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if cur and text.startswith(" "):
            words.append(_word(cur, offset))
            cur = []
        cur.append((text, data.t0 / 100.0, data.t1 / 100.0, float(data.p)))
    if cur:
        words.append(_word(cur, offset))
    return words


def _word(parts: list[tuple[str, float, float, float]], offset: float) -> Word:
    probs = [p for *_, p in parts]
    return Word(start=round(offset + parts[0][1], 3), end=round(offset + parts[-1][2], 3),
                word="".join(t for t, *_ in parts), probability=float(np.exp(np.mean(np.log(np.maximum(probs, 1e-9))))))


class WhisperCppEngine:
    """A loaded whisper.cpp context; one call at a time (a context holds one decoding state)."""

    def __init__(self, model_id: str, path: Path, *, use_gpu: bool, gpu_device: int = 0, threads: int | None = None,
                 vad_model: str | None = None, flash_attn: bool | None = None) -> None:
        import _pywhispercpp as pw
        from pywhispercpp.model import Model

        self._pw = pw
        log = Path(tempfile.mkstemp(prefix="voxbox-whispercpp-", suffix=".log")[1])
        ctx_params: dict[str, Any] = {"use_gpu": use_gpu, "gpu_device": gpu_device}
        if flash_attn is not None:
            ctx_params["flash_attn"] = flash_attn
        self.threads = threads or max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else (os.cpu_count() or 1)))
        # Any: voxbox drives pywhispercpp's private C context (_ctx, _params, _set_params), which its
        # Model class creates at run time without declaring
        self.model: Any
        try:
            self.model = Model(str(path), redirect_whispercpp_logs_to=str(log), context_params=ctx_params,  # type: ignore[arg-type]
                               n_threads=self.threads, print_progress=False, print_realtime=False)
            lines = log.read_text(errors="replace")
        finally:
            log.unlink(missing_ok=True)
        if self.model._ctx is None:
            raise ModelLoadError(f"whisper.cpp could not load {path.name}: {_last_error(lines)}")
        from voxbox.hardware.ggml import backend_in_use

        self.backend = backend_in_use(lines)  # e.g. "CPU", "CUDA0", "Vulkan0"
        self.vad_model = vad_model
        self.multilingual = bool(pw.whisper_is_multilingual(self.model._ctx))
        self.languages = tuple(Model.available_languages()) if self.multilingual else ("en",)
        self._lock = threading.Lock()
        ftype = "float16" if pw.whisper_model_ftype(self.model._ctx) == 1 else "float32"
        self.info = EngineInfo(
            name="whisper-cpp", task="asr", model=model_id,
            device="cpu" if self.backend == "CPU" else f"gpu:{self.backend}", dtype=ftype, sample_rate=SAMPLE_RATE,
            languages=self.languages, supports_translation=self.multilingual, supports_word_timestamps=True,
            max_concurrency=1,
            extra={"backend": self.backend, "threads": self.threads, "path": str(path), "use_gpu": use_gpu},
        )

    def components(self) -> list[ComponentSpec]:
        params = int(self._pw.whisper_model_n_text_state(self.model._ctx)) ** 2 * 12 * (
            int(self._pw.whisper_model_n_text_layer(self.model._ctx)) * 2)
        return [
            ComponentSpec(
                "whisper", params=params, devices=("cpu", "cuda", "rocm"), dtypes=(self.info.dtype or "float16",),
                backend="ggml", kind="transformer", overhead_bytes=200 * 2**20,
            )
        ]

    def _language(self, language: Any) -> str:
        if language in (None, ""):
            return "en" if not self.multilingual else "auto"
        if not isinstance(language, str):
            raise BadInputError("language must be a string such as 'en'", param="language")
        code = language.strip().lower().replace("_", "-").split("-")[0]
        if code not in self.languages:
            raise BadInputError(f"unsupported language {language!r} for model {self.info.model}", param="language")
        return code

    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        validate_asr_call(audio, task, multilingual=self.multilingual, model=self.info.model)
        lang = self._language(language)
        if prompt is not None and not isinstance(prompt, str):
            raise BadInputError("prompt must be a string", param="prompt")
        if not isinstance(word_timestamps, bool):
            raise BadInputError("word_timestamps must be true or false", param="word_timestamps")
        o = build_options(WhisperCppOptions, options, **kwargs)
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        params = self._params(o, lang, prompt, word_timestamps, task)
        spans = [(0, len(samples))]
        if o.vad_filter and not self.vad_model:
            with timings.measure("vad"):
                spans = _speech_spans(samples)
        info = TranscriptionInfo(language=None if lang == "auto" else lang, language_probability=None,
                                 duration=len(samples) / SAMPLE_RATE, task=task,  # type: ignore[arg-type]
                                 options={"model": self.info.model, "device": self.info.device,
                                          "backend": self.backend, "threads": self.threads, **params,
                                          "vad": bool(o.vad_filter)},
                                 timings=timings)
        segs = self._segments(samples, spans, params, word_timestamps, timings, cancel)
        return cancellable(segs, cancel), info

    def _params(self, o: WhisperCppOptions, lang: str, prompt: str | None, words: bool, task: str) -> dict[str, Any]:
        p: dict[str, Any] = {"language": lang, "translate": task == "translate", "token_timestamps": words,
                             "no_context": True}
        if prompt:
            p["initial_prompt"] = prompt
        if o.beam_size and o.beam_size > 1:
            p["beam_search"] = {"beam_size": o.beam_size, "patience": -1.0}
        if o.temperature is not None:
            p["temperature"] = o.temperature
        if o.temperature_increment is not None:
            p["temperature_inc"] = o.temperature_increment
        if o.no_speech_threshold is not None:
            p["no_speech_thold"] = o.no_speech_threshold
        if o.condition_on_previous_text is not None:
            p["no_context"] = not o.condition_on_previous_text
        if o.max_segment_tokens is not None:
            p["max_tokens"] = o.max_segment_tokens
        if o.vad_filter and self.vad_model:
            p.update(vad=True, vad_model_path=self.vad_model)
        return p

    def _segments(self, samples: np.ndarray, spans: list[tuple[int, int]], params: dict[str, Any], words: bool,
                  timings: StageTimings, cancel: CancelToken | None) -> Iterator[Segment]:
        n = 0
        pw = self._pw
        with self._lock:
            # fresh parameters per call: pywhispercpp's setters are sticky across calls
            strategy = pw.whisper_sampling_strategy
            self.model._params = pw.whisper_full_default_params(
                strategy.WHISPER_SAMPLING_BEAM_SEARCH if params.get("beam_search") else strategy.WHISPER_SAMPLING_GREEDY
            )
            self.model._set_params({"n_threads": self.threads, "print_progress": False, "print_realtime": False,
                                    "print_timestamps": False, **params})
            for start, end in spans:
                for seg in self._run(samples[start:end], start / SAMPLE_RATE, words, timings, cancel):
                    yield Segment(id=n, start=seg[0], end=min(seg[1], len(samples) / SAMPLE_RATE), text=seg[2],
                                  words=seg[3])
                    n += 1

    def _run(self, chunk: np.ndarray, offset: float, words: bool, timings: StageTimings,
             cancel: CancelToken | None) -> Iterator[tuple[float, float, str, list[Word] | None]]:
        """Run ``whisper_full`` in a worker thread; yield its segments as its callback hands them over."""
        pw, ctx, params = self._pw, self.model._ctx, self.model._params
        limit = offset + chunk.size / SAMPLE_RATE  # a segment never runs past its span
        q: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()

        def on_new(c: Any, n_new: int, _user: Any = None) -> None:
            total = pw.whisper_full_n_segments(c)
            for i in range(total - n_new, total):
                text = pw.whisper_full_get_segment_text(c, i)
                text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
                q.put((min(offset + pw.whisper_full_get_segment_t0(c, i) / 100.0, limit),
                       min(offset + pw.whisper_full_get_segment_t1(c, i) / 100.0, limit), text,
                       _words(pw, c, i, offset) if words else None))

        def work() -> None:
            try:
                with timings.measure("transcribe"):
                    rc = pw.whisper_full(ctx, params, chunk, chunk.size)
                q.put(RuntimeError(f"whisper.cpp failed (status {rc})") if rc not in (0, None) and not stop.is_set()
                      else _DONE)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                q.put(exc)

        pw.assign_new_segment_callback(params, on_new)
        pw.assign_abort_callback(params, lambda: stop.is_set() or (cancel is not None and cancel.cancelled))
        t = threading.Thread(target=work, name="whisper-cpp", daemon=True)
        t.start()
        try:
            while (item := q.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            t.join()

    def close(self) -> None:
        with self._lock:
            del self.model


def _last_error(log: str) -> str:
    lines = [
        ln for ln in log.splitlines() if "error" in ln.lower() or "failed" in ln.lower() or "invalid" in ln.lower()
    ]
    return (lines[-1] if lines else "unreadable model file").split(": ", 1)[-1][:200]


def _speech_spans(samples: np.ndarray) -> list[tuple[int, int]]:
    """Speech spans (sample indexes) by the Silero VAD faster-whisper ships."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = [
        (int(s["start"]), int(s["end"]))
        for s in get_speech_timestamps(samples, VadOptions(min_silence_duration_ms=500))
    ]
    return spans


def _device(requested: str | None, component: ComponentSpec) -> tuple[bool, int, str]:
    """(use_gpu, gpu index, reason) from ``device``: auto (the planner), cpu, cuda/rocm/vulkan/gpu[:N]."""
    from voxbox.engines.placement import auto_device

    dev = (requested or "auto").strip().lower()
    if dev == "auto":
        dev, _dtype, reason = auto_device("whisper-cpp", component)
        if dev == "cpu":
            return False, 0, reason
    kind, _, idx = dev.partition(":")
    if kind == "cpu":
        return False, 0, "device cpu was requested explicitly."
    if kind not in ("cuda", "rocm", "hip", "vulkan", "metal", "gpu"):
        raise BadInputError(f"whisper-cpp runs on 'cpu' or a GPU ('cuda', 'rocm', 'vulkan', 'gpu'), not {requested!r}",
                            param="device")
    from voxbox.hardware.ggml import gpu_backends

    if not gpu_backends():
        raise DeviceError(f"device {requested!r} requested, but this whisper.cpp build is CPU-only "
                          "(install a pywhispercpp built with CUDA, HIP or Vulkan)")
    try:
        index = int(idx or 0)
    except ValueError:
        raise BadInputError(f"bad device {requested!r}", param="device") from None
    return True, index, f"device {requested} was requested explicitly."


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, threads: int | None = None,
         vad_model: str | None = None, flash_attn: bool | None = None) -> WhisperCppEngine:
    """Load a ggml Whisper model (see the module docstring); ``dtype`` is the file's (f16/f32), not a choice."""
    if dtype not in (None, "auto", "float16", "float32", "default"):
        raise BadInputError(f"whisper-cpp runs the ggml file's own weight type; dtype {dtype!r} cannot be chosen "
                            "at load time (convert with --quantize instead)", param="dtype")
    if threads is not None and threads < 1:
        raise BadInputError(f"threads must be >= 1, got {threads}", param="threads")
    if vad_model is not None and not Path(vad_model).is_file():
        raise ModelNotFoundError(f"VAD model {vad_model!r} does not exist", param="vad_model")
    model_id, path = resolve_model_file(model)
    use_gpu, index, reason = _device(device, SPEC.components[0])
    engine = WhisperCppEngine(model_id, path, use_gpu=use_gpu, gpu_device=index, threads=threads,
                              vad_model=vad_model, flash_attn=flash_attn)
    engine.info.extra["device_reason"] = reason
    return engine


def models() -> list[str]:
    from voxbox.models.bundled import bundle_status

    return [name for name, bundle in _BUNDLED.items() if bundle_status(bundle)[0]]


def _factory(req: LoadRequest) -> WhisperCppEngine:
    opts = build_options(WhisperCppLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, vad_model=opts.vad_model,
                flash_attn=opts.flash_attn)


SPEC: EngineSpec[WhisperCppEngine, WhisperCppOptions] = EngineSpec(
    name="whisper-cpp", task="asr", factory=_factory, options=WhisperCppOptions, load_options=WhisperCppLoadOptions,
    description="Whisper on whisper.cpp (ggml; CPU, CUDA, HIP or Vulkan builds); any ggml file, bundled tiny.en/base "
                "converted once",
    requires=("pywhispercpp",), install_hint="pip install 'voxbox[whispercpp]'",
    components=(ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float16",),
                              backend="ggml", kind="transformer", overhead_bytes=200 * 2**20),),
    capabilities=Capabilities(streaming=True, word_timestamps=True, translate=True),
    default_model="tiny.en", aliases=("whisper-cpp",),
    bundled_models=models,
)
