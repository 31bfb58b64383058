"""whisper.cpp / ggml: which backends the loaded library was built with, and which one a context uses.

ggml is the tensor library under whisper.cpp; a build carries a CPU backend and any of CUDA, HIP
(ROCm), Vulkan, Metal, SYCL. A CPU-only wheel (pywhispercpp from PyPI) runs everything on the CPU
and says so only in its log. Three signals, strongest last:

1. the shared libraries shipped with the binding (``libggml-cuda.so``, ``libggml-vulkan.so``...);
2. ``whisper_print_system_info()``, which lists each registered backend with its features;
3. the context's own log when a model loads: ``whisper_backend_init_gpu: using Vulkan0 backend``
   or ``no GPU found`` (:func:`backend_in_use`), which the probe
   (:func:`voxbox.hardware.probe_targets.ggml_transcribe`) checks along with timing against the CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from voxbox.hardware.detect import BackendInfo

__all__ = ["GPU_BACKENDS", "backend_in_use", "ggml_info", "gpu_backends", "parse_backends", "system_info"]

#: ggml GPU backend names as its libraries and system info spell them -> voxbox's canonical name.
GPU_BACKENDS = {"cuda": "CUDA", "hip": "HIP", "rocm": "HIP", "vulkan": "VULKAN", "metal": "METAL", "sycl": "SYCL",
                "musa": "MUSA", "cann": "CANN", "opencl": "OPENCL"}
_LIB = re.compile(r"libggml-([a-z]+)", re.IGNORECASE)
_INFO = re.compile(r"(?:^|\|)\s*([A-Za-z]+)\s*:", re.MULTILINE)


def _package_dirs() -> list[Path]:
    dirs: list[Path] = []
    for name in ("pywhispercpp", "_pywhispercpp"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            base = Path(spec.origin).parent
            dirs += [base, base.parent / "pywhispercpp.libs"]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def parse_backends(system_info_text: str = "", library_names: list[str] | tuple[str, ...] = ()) -> list[str]:
    """GPU backends named by a system info string or by ggml backend library file names."""
    found: set[str] = set()
    for m in _INFO.finditer(system_info_text or ""):
        canon = GPU_BACKENDS.get(m.group(1).lower())
        if canon:
            found.add(canon)
    for lib in library_names:
        hit = _LIB.search(lib)
        if hit and hit.group(1).lower() in GPU_BACKENDS:
            found.add(GPU_BACKENDS[hit.group(1).lower()])
    return sorted(found)


@functools.lru_cache(maxsize=1)
def system_info() -> str:
    """``whisper_print_system_info()`` of the installed binding ("" when it is not installed)."""
    try:
        import _pywhispercpp as pw
    except Exception:  # noqa: BLE001 - not installed or broken: no backends
        return ""
    return str(pw.whisper_print_system_info())


def _library_names() -> list[str]:
    return sorted({f.name for d in _package_dirs() for f in d.glob("libggml-*")})


def gpu_backends() -> list[str]:
    """GPU backends the installed whisper.cpp build carries ([] for a CPU-only build)."""
    return parse_backends(system_info(), _library_names())


def backend_in_use(log_text: str) -> str:
    """The backend a whisper.cpp context took, from its load log: "CUDA0", "Vulkan0"... or "CPU"."""
    m = re.search(r"whisper_backend_init_gpu: using (\S+) backend", log_text or "")
    return m.group(1) if m else "CPU"


def ggml_info() -> BackendInfo:
    """Detection record for the ``ggml`` backend (whisper.cpp through pywhispercpp)."""
    try:
        found = importlib.util.find_spec("pywhispercpp") is not None
    except (ImportError, ValueError) as exc:  # a broken or blocked install
        return BackendInfo("ggml", installed=False, error=f"pywhispercpp cannot be imported: {exc}")
    if not found:
        return BackendInfo("ggml", installed=False, error="pywhispercpp is not installed")
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver: str | None = version("pywhispercpp")
    except PackageNotFoundError:
        ver = None
    info = system_info()
    gpus = parse_backends(info, _library_names())
    return BackendInfo("ggml", installed=bool(info), version=ver, build=gpus[0].lower() if gpus else "cpu",
                       details={"library": f"whisper.cpp (pywhispercpp {ver})", "gpu_backends": gpus,
                                "system_info": info.strip(), "libraries": _library_names()},
                       error=None if info else "the whisper.cpp binding failed to load")
