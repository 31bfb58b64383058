"""Measurement helpers: clocks, summaries, memory peaks, machine and library descriptions (error
rates are re-exported from :mod:`voxbox.text.scoring`). Nothing here imports an engine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys
import threading
import time
from typing import Any, Iterable, Sequence

import numpy as np

from voxbox.text.scoring import cer, edit_distance, normalize_text, wer  # one implementation, re-exported

__all__ = [
    "PeakMemory",
    "cer",
    "clock",
    "cpu_seconds",
    "device_sync",
    "gpu_allocated",
    "gpu_peak",
    "edit_distance",
    "library_versions",
    "machine_description",
    "normalize_text",
    "percentiles",
    "reset_gpu_peak",
    "summarize",
    "wer",
]

#: The one clock every measurement reads: monotonic, highest resolution available.
clock = time.perf_counter


# --------------------------------------------------------------------------------------------
# Summaries


def summarize(values: Iterable[float | None]) -> dict[str, float] | None:
    """min / median / max / mean of the non-None values; None when there are none."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    arr = np.asarray(xs, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "n": len(xs),
    }


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float] | None:
    """Latency percentiles (linear interpolation), keyed ``p50`` ... ; None for no values."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


# --------------------------------------------------------------------------------------------
# Memory and devices


def _ru_maxrss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


class PeakMemory:
    """Peak resident memory (and peak GPU memory where torch+CUDA is in use) of this process.

    The bench runs every target in its own child process, so the process high-water mark
    (``ru_maxrss``) is the target's own peak. A sampling thread also records the peak between
    ``start()`` and ``stop()`` for runs that share a process (``--no-isolate``).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sampled_peak = 0

    def start(self) -> "PeakMemory":
        import psutil

        proc = psutil.Process()
        self.sampled_peak = proc.memory_info().rss

        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.sampled_peak = max(self.sampled_peak, proc.memory_info().rss)
                except Exception:  # noqa: BLE001 # pragma: no cover - process going away
                    return

        self._thread = threading.Thread(target=loop, name="bench-rss", daemon=True)
        self._thread.start()
        _reset_gpu_peak()
        return self

    def stop(self) -> dict[str, int | None]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        return {
            "peak_rss_bytes": max(self.sampled_peak, 0),
            "process_max_rss_bytes": _ru_maxrss_bytes(),
            "peak_gpu_bytes": _gpu_peak(),
        }


def _torch_if_loaded() -> Any:
    return sys.modules.get("torch")


def _cuda_in_use() -> bool:
    torch = _torch_if_loaded()
    try:
        return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a broken CUDA setup means "not in use"
        return False


def _reset_gpu_peak() -> None:
    if _cuda_in_use():
        _torch_if_loaded().cuda.reset_peak_memory_stats()


def _gpu_peak() -> int | None:
    if not _cuda_in_use():
        return None
    return int(_torch_if_loaded().cuda.max_memory_allocated())


def device_sync(device: str | None = None) -> None:
    """Wait for queued GPU work before a clock is read: whenever this process has initialised CUDA
    (a hybrid placement may run part of a "cpu" engine there), whatever ``device`` says; a no-op
    otherwise. ``device`` is kept for callers that pass one."""
    if _cuda_in_use():
        _torch_if_loaded().cuda.synchronize()


def gpu_allocated() -> int | None:
    """Bytes torch holds on the GPU now (None without CUDA): after a load, the weights and caches."""
    return int(_torch_if_loaded().cuda.memory_allocated()) if _cuda_in_use() else None


def reset_gpu_peak() -> None:
    """Start a new GPU peak (e.g. before the measured runs, to see their peak above the weights)."""
    _reset_gpu_peak()


def gpu_peak() -> int | None:
    """torch's peak GPU allocation since the last reset (None without CUDA)."""
    return _gpu_peak()


def cpu_seconds() -> float:
    """CPU time of this process (every thread) plus its finished children, user + system."""
    own = time.process_time()
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + ch.ru_utime + ch.ru_stime


# --------------------------------------------------------------------------------------------
# Machine and library descriptions

_LIBRARIES = (
    "voxbox", "numpy", "av", "onnxruntime", "ctranslate2", "faster-whisper", "piper-tts", "hibari-tts",
    "torch", "openai-whisper", "pywhispercpp", "httpx", "transformers", "echo-tts", "omnivoice", "voxcpm",
    "kokoro-onnx", "onnx-asr", "triton",
)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Installed versions of the libraries that matter for speech inference (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in (*_LIBRARIES, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[dict[str, Any]]:
    """GPUs as torch sees them where this process loaded torch, else as NVML / nvidia-smi / sysfs do
    (the bench's parent process never imports torch; its targets run in children)."""
    torch = _torch_if_loaded()
    try:
        if torch is not None and torch.cuda.is_available():
            out = []
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory)})
            return out
    except Exception:  # noqa: BLE001 - fall back to the driver's view
        pass
    try:
        from voxbox.hardware.detect import detect

        return [{"index": g.index, "name": g.name, "memory_bytes": int(g.total_memory)}
                for g in detect(backends=()).gpus]
    except Exception:  # noqa: BLE001 - a description, never a failure
        return []


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_affinity": affinity,
        "memory_bytes": int(psutil.virtual_memory().total),
        "python": platform.python_version(),
        "gpus": _gpus(),
        "load_average": load,
    }
