"""Measurement helpers: clocks, summaries, text normalisation and error rates, memory peaks,
machine and library descriptions. Pure Python + numpy + psutil; nothing here imports an engine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import resource
import sys
import threading
import time
import unicodedata
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "PeakMemory",
    "cer",
    "clock",
    "device_sync",
    "edit_distance",
    "library_versions",
    "machine_description",
    "normalize_text",
    "percentiles",
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
# Text normalisation and error rates

_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_DASHES = re.compile(r"[\u2010-\u2015\-/]+")
_NON_WORD = re.compile(r"[^\w\s']+")
_CONTRACTIONS = (
    ("n't", " not"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"), ("'m", " am"), ("'d", " would"),
)


def normalize_text(text: str) -> str:
    """Lower-case, punctuation-free, single-spaced words: the form WER/CER are computed on.

    Small and predictable on purpose (no spelling tables): NFKC, curly quotes folded, dashes and
    slashes become spaces, common contractions expanded, other punctuation dropped, single
    digits 0-12 spelled out so "2" and "two" agree.
    """
    t = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    t = _DASHES.sub(" ", t)
    for short, long in _CONTRACTIONS:
        t = t.replace(short, long)
    t = _NON_WORD.sub(" ", t)
    t = t.replace("'s ", "s ").replace("'", "")
    words = [_NUMBER_WORDS.get(w, w) for w in t.split()]
    return " ".join(words)


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance between two token sequences (vectorised one row at a time).

    Row update: d[j] = min(prev[j] + 1, prev[j-1] + cost_j, d[j-1] + 1); the left-to-right
    dependency is solved in closed form as ``j + cummin(a_k - k)``.
    """
    n, m = len(ref), len(hyp)
    if n == 0:
        return m
    if m == 0:
        return n
    vocab: dict[Any, int] = {}
    r = np.fromiter((vocab.setdefault(x, len(vocab)) for x in ref), dtype=np.int64, count=n)
    h = np.fromiter((vocab.setdefault(x, len(vocab)) for x in hyp), dtype=np.int64, count=m)
    idx = np.arange(m + 1, dtype=np.int64)
    prev = idx.copy()
    for i in range(1, n + 1):
        a = np.empty(m + 1, dtype=np.int64)
        a[0] = i
        a[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (h != r[i - 1]))
        prev = idx + np.minimum.accumulate(a - idx)
    return int(prev[m])


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate on normalised text, clipped to [0, 1] (an empty reference scores 0 or 1)."""
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    return min(1.0, edit_distance(ref, hyp) / len(ref))


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate on normalised text (spaces count), clipped to [0, 1]."""
    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return min(1.0, edit_distance(ref, hyp) / len(ref))


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
                except Exception:  # pragma: no cover - process going away
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
    except Exception:
        return False


def _reset_gpu_peak() -> None:
    if _cuda_in_use():
        _torch_if_loaded().cuda.reset_peak_memory_stats()


def _gpu_peak() -> int | None:
    if not _cuda_in_use():
        return None
    return int(_torch_if_loaded().cuda.max_memory_allocated())


def device_sync(device: str | None) -> None:
    """Wait for queued device work before a clock is read (no-op on the CPU)."""
    if device and device.split(":")[0] in ("cuda", "rocm", "hip") and _cuda_in_use():
        _torch_if_loaded().cuda.synchronize()


# --------------------------------------------------------------------------------------------
# Machine and library descriptions

_LIBRARIES = (
    "voxbox", "numpy", "av", "onnxruntime", "ctranslate2", "faster-whisper", "piper-tts", "hibari-tts",
    "torch", "openai-whisper", "pywhispercpp", "httpx",
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
    torch = _torch_if_loaded()
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory)})
        return out
    except Exception:
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
