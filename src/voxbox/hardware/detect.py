"""Detect the machine: CPU, RAM, GPUs, drivers, and what each backend really sees.

Import-light: torch, CTranslate2, ONNX Runtime and NVML are imported lazily inside
:func:`detect`, each in its own ``try``; a missing one is reported as absent, never raised.
The result is a plain :class:`MachineInfo` dataclass that round-trips through JSON, so the
planner and the tests work from recorded machine descriptions (``tests/data/machines/*.json``)
exactly as from a live detection. ``detect()`` is cached in-process; ``refresh=True`` re-reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BackendInfo",
    "CPUInfo",
    "GPUInfo",
    "MachineInfo",
    "detect",
    "load_machine",
]

GiB = 1024**3

#: AMD gfx targets that are APUs (iGPU sharing host memory).
AMD_APU_ARCHS = frozenset({
    "gfx90c", "gfx1013", "gfx1033", "gfx1035", "gfx1036", "gfx1037", "gfx1103",
    "gfx1150", "gfx1151", "gfx1152", "gfx1153",
})

#: CPU flags worth reporting (Linux /proc/cpuinfo names, lower case).
_X86_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)
_ARM_FLAGS = {"asimd": "neon", "asimdhp": "neon_fp16", "sve": "sve", "sve2": "sve2", "bf16": "bf16",
              "i8mm": "i8mm", "asimddp": "dotprod"}


@dataclass
class CPUInfo:
    model: str
    arch: str  # platform.machine(): x86_64, aarch64, arm64
    physical_cores: int | None
    logical_cores: int
    usable_cores: int  # what this process may run on (affinity / cgroup)
    features: list[str] = field(default_factory=list)  # avx2, avx512f, amx_bf16, neon, ...

    def has(self, feature: str) -> bool:
        return feature in self.features


@dataclass
class GPUInfo:
    index: int  # torch device index (or detection order when torch cannot see it)
    vendor: str  # "nvidia", "amd", "intel", "apple", "unknown"
    name: str
    arch: str | None = None  # "sm_90" (NVIDIA) or "gfx1151" (AMD, from gcnArchName)
    compute_capability: str | None = None  # "9.0" on NVIDIA
    total_memory: int = 0  # bytes the device can allocate
    free_memory: int | None = None  # bytes free at detection time
    unified_memory: bool = False  # memory shared with the host (APU / iGPU / Grace)
    multiprocessors: int | None = None
    torch_visible: bool = True  # False when found by NVML/sysfs but not by torch
    source: str = "torch"  # "torch", "nvml", "nvidia-smi", "sysfs"

    @property
    def kind(self) -> str:
        """Device kind used by ComponentSpec.devices: "cuda" for NVIDIA, "rocm" for AMD."""
        return {"nvidia": "cuda", "amd": "rocm"}.get(self.vendor, self.vendor)

    @property
    def torch_device(self) -> str:
        # ROCm builds of torch address AMD GPUs as "cuda" too.
        return "cuda" if self.index == 0 else f"cuda:{self.index}"

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name}{', ' + self.arch if self.arch else ''})"


@dataclass
class BackendInfo:
    name: str  # "torch", "ctranslate2", "onnxruntime"
    installed: bool
    version: str | None = None
    build: str | None = None  # torch: "cuda" | "rocm" | "cpu" | "mps"
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # import error or failure while asking it

    def get(self, key: str, default: Any = None) -> Any:
        return self.details.get(key, default)


@dataclass
class MachineInfo:
    os: str
    python: str
    cpu: CPUInfo
    ram_total: int
    ram_available: int
    gpus: list[GPUInfo] = field(default_factory=list)
    backends: dict[str, BackendInfo] = field(default_factory=dict)
    drivers: dict[str, str | None] = field(default_factory=dict)  # nvidia, cuda_driver, cuda_runtime, hip, rocm
    voxbox_version: str | None = None
    source: str = "detected"  # or the fixture's description
    detect_seconds: float | None = None

    # ---- queries -----------------------------------------------------------------------------
    def backend(self, name: str) -> BackendInfo:
        return self.backends.get(name) or BackendInfo(name=name, installed=False)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def gpu(self, index: int) -> GPUInfo | None:
        for g in self.gpus:
            if g.index == index:
                return g
        return None

    @property
    def cuda_major(self) -> int | None:
        """Major CUDA version the machine runs: the runtime torch uses, else the driver's."""
        for key in ("cuda_runtime", "cuda_driver"):
            v = self.drivers.get(key)
            if v:
                try:
                    return int(str(v).split(".")[0])
                except ValueError:
                    continue
        return None

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 2), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MachineInfo:
        d = dict(d)
        d.pop("_comment", None)
        cpu = CPUInfo(**d.pop("cpu"))
        gpus = [GPUInfo(**g) for g in d.pop("gpus", [])]
        backends = {k: BackendInfo(**{"name": k, **v}) for k, v in d.pop("backends", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(cpu=cpu, gpus=gpus, backends=backends, **{k: v for k, v in d.items() if k in known})

    # ---- cache key -----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What probe results depend on: hardware, drivers and library versions (not free memory)."""
        return {
            "cpu": [self.cpu.model, self.cpu.arch],
            "gpus": [[g.vendor, g.name, g.arch, g.total_memory // GiB] for g in self.gpus],
            "drivers": {k: v for k, v in sorted(self.drivers.items()) if v},
            "backends": {k: [b.installed, b.version, b.build] for k, b in sorted(self.backends.items())},
            "python": ".".join(self.python.split(".")[:2]),
            "voxbox": self.voxbox_version,
        }

    def fingerprint_key(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_machine(path: str | os.PathLike[str]) -> MachineInfo:
    """A recorded machine description (JSON written by ``MachineInfo.to_json``)."""
    return MachineInfo.from_dict(json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------------------------
# live detection
# ------------------------------------------------------------------------------------------------

_CACHE: dict[str, MachineInfo] = {}
_LOCK = threading.Lock()


def detect(refresh: bool = False,
           backends: tuple[str, ...] = ("torch", "ctranslate2", "onnxruntime", "ggml")) -> MachineInfo:
    """Detect this machine (cached per process; ``refresh=True`` detects again)."""
    key = ",".join(backends)
    with _LOCK:
        if not refresh and key in _CACHE:
            return _CACHE[key]
        t0 = time.perf_counter()
        info = _detect(backends)
        info.detect_seconds = round(time.perf_counter() - t0, 3)
        _CACHE[key] = info
        return info


def _detect(backends: tuple[str, ...]) -> MachineInfo:
    from voxbox import __version__
    from voxbox.hardware import devices

    ram_total, ram_avail = _ram()
    drivers: dict[str, str | None] = {}
    found: dict[str, BackendInfo] = {}
    gpus: list[GPUInfo] = []

    if "torch" in backends:
        found["torch"], gpus = devices.torch_info(drivers)
    devices.nvidia_gpus(drivers, gpus)
    devices.amd_sysfs_gpus(drivers, gpus)
    if "ctranslate2" in backends:
        found["ctranslate2"] = devices.ctranslate2_info()
    if "onnxruntime" in backends:
        found["onnxruntime"] = devices.onnxruntime_info()
    if "ggml" in backends:
        from voxbox.hardware.ggml import ggml_info

        found["ggml"] = ggml_info()

    return MachineInfo(
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        cpu=_cpu(),
        ram_total=ram_total,
        ram_available=ram_avail,
        gpus=gpus,
        backends=found,
        drivers=drivers,
        voxbox_version=__version__,
    )


def _ram() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception:  # pragma: no cover - psutil is a dependency  # noqa: BLE001 - best-effort detection: a failing query is reported, never fatal
        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            avail = os.sysconf("SC_AVPHYS_PAGES")
            return pages * size, avail * size
        except (ValueError, OSError, AttributeError):
            return 0, 0


def _cpu() -> CPUInfo:
    arch = platform.machine() or "unknown"
    model = ""
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k in ("model name", "hardware", "cpu model") and v.strip() and not model:
            model = v.strip()
        elif k in ("flags", "features") and not flags:
            flags = set(v.split())
    if sys.platform == "darwin":  # pragma: no cover - not in CI
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, check=False,
                                   text=True, timeout=2).stdout.strip() or model
        except Exception:  # noqa: BLE001, S110 - best-effort detection: a failing query is reported, never fatal
            pass
        if arch == "arm64":
            flags |= {"asimd"}
    model = model or platform.processor() or arch
    features = [f for f in _X86_FLAGS if f in flags]
    features += sorted({v for k, v in _ARM_FLAGS.items() if k in flags})
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    quota = _cgroup_cpus()
    if quota:
        usable = max(1, min(usable, quota))
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001, S110 - best-effort detection: a failing query is reported, never fatal
        pass
    return CPUInfo(model=model, arch=arch, physical_cores=physical, logical_cores=logical,
                   usable_cores=usable, features=features)


def _cgroup_cpus() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return None
