"""What each library and driver sees: GPUs from torch, NVML / nvidia-smi and sysfs, and the
CTranslate2, ONNX Runtime and ggml (whisper.cpp) backends. Each query is imported lazily in its own
``try``: a missing or broken library is reported as absent, never raised (see :mod:`.detect`)."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from voxbox.hardware.detect import AMD_APU_ARCHS, BackendInfo, GPUInfo

__all__ = ["amd_sysfs_gpus", "ctranslate2_info", "nvidia_gpus", "onnxruntime_info", "short_error", "torch_info"]


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def torch_info(drivers: dict[str, str | None]) -> tuple[BackendInfo, list[GPUInfo]]:
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install (missing .so)  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        return BackendInfo("torch", installed=False, error=short_error(exc)), []
    gpus: list[GPUInfo] = []
    hip = getattr(torch.version, "hip", None)
    cuda = getattr(torch.version, "cuda", None)
    build = "rocm" if hip else "cuda" if cuda else "cpu"
    details: dict[str, Any] = {"cuda_version": cuda, "hip_version": hip}
    error = None
    if build == "cpu" and getattr(torch.backends, "mps", None) is not None:
        try:
            if torch.backends.mps.is_available():
                build = "mps"
        except Exception:  # noqa: BLE001, S110 - best-effort detection: a failing query is reported, never fatal
            pass
    try:
        if build in ("cuda", "rocm"):
            details["arch_list"] = list(torch.cuda.get_arch_list())
            n = torch.cuda.device_count()
            details["device_count"] = n
            if hip:
                drivers["hip"] = str(hip)
            if cuda:
                drivers["cuda_runtime"] = str(cuda)
            for i in range(n):
                p = torch.cuda.get_device_properties(i)
                free = None
                if hip or not _nvml_available():  # NVML reads free memory without a CUDA context
                    try:
                        free, _total = torch.cuda.mem_get_info(i)
                    except Exception:  # noqa: BLE001, S110 - best-effort detection: a failing query is reported, never fatal
                        pass
                gcn = getattr(p, "gcnArchName", None) if hip else None
                arch = (gcn.split(":")[0] if gcn else None) if hip else f"sm_{p.major}{p.minor}"
                integrated = bool(getattr(p, "is_integrated", False))
                gpus.append(GPUInfo(
                    index=i, vendor="amd" if hip else "nvidia", name=p.name, arch=arch,
                    compute_capability=None if hip else f"{p.major}.{p.minor}",
                    total_memory=int(p.total_memory), free_memory=None if free is None else int(free),
                    unified_memory=integrated or (arch in AMD_APU_ARCHS),
                    multiprocessors=getattr(p, "multi_processor_count", None),
                ))
        else:
            details["device_count"] = 0
    except Exception as exc:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        error = short_error(exc)
    details["threads"] = torch.get_num_threads()
    return BackendInfo("torch", installed=True, version=str(torch.__version__), build=build,
                       details=details, error=error), gpus


def _nvml_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("pynvml") is not None
    except (ImportError, ValueError):
        return False


def nvidia_gpus(drivers: dict[str, str | None], gpus: list[GPUInfo]) -> None:
    """Driver versions (and GPUs torch cannot see) from NVML, falling back to nvidia-smi."""
    if not (os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi")):
        return
    rows: list[tuple[str, int, int | None]] = []
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            drivers["nvidia"] = _s(pynvml.nvmlSystemGetDriverVersion())
            v = pynvml.nvmlSystemGetCudaDriverVersion()
            drivers["cuda_driver"] = f"{v // 1000}.{(v % 1000) // 10}"
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                rows.append((_s(pynvml.nvmlDeviceGetName(h)), int(mem.total), int(mem.free)))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10, check=False).stdout
                for line in out.strip().splitlines():
                    gpu_name, tot, free_mib, drv = [x.strip() for x in line.split(",")]
                    rows.append((gpu_name, int(float(tot)) * 1024**2, int(float(free_mib)) * 1024**2))
                    drivers["nvidia"] = drv
                head = subprocess.run([smi], capture_output=True, text=True, timeout=10, check=False).stdout
                if "CUDA Version:" in head:
                    drivers["cuda_driver"] = head.split("CUDA Version:")[1].split()[0]
            except Exception:  # noqa: BLE001, S110 - best-effort detection: a failing query is reported, never fatal
                pass
    nv_torch = [g for g in gpus if g.vendor == "nvidia"]
    for i, (name, total, free) in enumerate(rows):
        if i < len(nv_torch):
            if nv_torch[i].free_memory is None:
                nv_torch[i].free_memory = free
            continue
        gpus.append(GPUInfo(index=len(gpus), vendor="nvidia", name=name, total_memory=total, free_memory=free,
                            torch_visible=False, source="nvml"))


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def amd_sysfs_gpus(drivers: dict[str, str | None], gpus: list[GPUInfo]) -> None:
    """AMD GPUs from /sys (no ROCm needed) and the ROCm version from /opt/rocm."""
    for f in ("/opt/rocm/.info/version", "/opt/rocm/.info/version-dev"):
        try:
            drivers["rocm"] = Path(f).read_text().strip()
            break
        except OSError:
            continue
    cards = sorted(glob.glob("/sys/class/drm/card[0-9]*/device/vendor"))
    amd_torch = [g for g in gpus if g.vendor == "amd"]
    n = 0
    for vf in cards:
        if "-" in vf.split("/")[4]:
            continue  # connectors (card0-DP-1)
        try:
            if Path(vf).read_text().strip() != "0x1002":
                continue
            dev = Path(vf).parent
            total = int((dev / "mem_info_vram_total").read_text())
            used = int((dev / "mem_info_vram_used").read_text())
        except (OSError, ValueError):
            continue
        if n < len(amd_torch):
            n += 1
            continue
        n += 1
        gpus.append(GPUInfo(index=len(gpus), vendor="amd", name=f"AMD GPU ({dev.name})", total_memory=total,
                            free_memory=total - used, torch_visible=False, source="sysfs"))


def ctranslate2_info() -> BackendInfo:
    try:
        import ctranslate2
    except Exception as exc:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        return BackendInfo("ctranslate2", installed=False, error=short_error(exc))
    details: dict[str, Any] = {}
    error = None
    try:
        details["cpu_compute_types"] = sorted(ctranslate2.get_supported_compute_types("cpu"))
        n = ctranslate2.get_cuda_device_count()
        details["cuda_device_count"] = n
        details["cuda_compute_types"] = [sorted(ctranslate2.get_supported_compute_types("cuda", i)) for i in range(n)]
        if n:
            details["libcublas12"] = _can_load("libcublas.so.12")
    except Exception as exc:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        error = short_error(exc)
    return BackendInfo("ctranslate2", installed=True, version=getattr(ctranslate2, "__version__", None),
                       build="cuda" if details.get("cuda_device_count") else "cpu", details=details, error=error)


def _can_load(soname: str) -> bool:
    if sys.platform != "linux":
        return True
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def onnxruntime_info() -> BackendInfo:
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        return BackendInfo("onnxruntime", installed=False, error=short_error(exc))
    details: dict[str, Any] = {}
    error = None
    try:
        details["providers"] = list(ort.get_available_providers())
        details["device"] = ort.get_device()
    except Exception as exc:  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        error = short_error(exc)
    gpu = any(p in details.get("providers", []) for p in ("CUDAExecutionProvider", "ROCMExecutionProvider",
                                                             "MIGraphXExecutionProvider", "TensorrtExecutionProvider"))
    return BackendInfo("onnxruntime", installed=True, version=getattr(ort, "__version__", None),
                       build="gpu" if gpu else "cpu", details=details, error=error)
