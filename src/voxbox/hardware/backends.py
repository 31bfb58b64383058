"""What each inference backend (torch, CTranslate2, ONNX Runtime, ggml) can do on a device.

Backend knowledge only: which GPUs a backend can drive, which dtypes it offers there and on the
CPU, which generic probe speaks for it, and whether a device count is proof enough. Engines are
never named here; they declare components (:class:`voxbox.types.ComponentSpec`) with a
``backend`` and the planner asks this module about that backend.
"""

from __future__ import annotations

from voxbox.hardware.detect import GPUInfo, MachineInfo
from voxbox.types import ComponentSpec

__all__ = ["CONV_KINDS", "GPU_NEEDS_PROBE", "bf16_ok", "cpu_dtypes", "default_dtype", "device_kinds", "gpu_blocker",
           "gpu_dtypes", "probe_component", "sees_gpu"]

#: Component kinds that are convolution-heavy (MIOpen quirks match on them; float32 by default on GPUs).
CONV_KINDS = frozenset({"conv", "autoencoder", "vocoder", "codec"})
CT2_GPU_ORDER = ("float16", "int8_float16", "bfloat16", "int8_bfloat16", "int8", "float32")
CT2_CPU_ORDER = ("int8", "int8_float32", "float32")
ORT_GPU_PROVIDERS = {"cuda": ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
                     "rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider")}
#: ggml GPU backends per device kind (a whisper.cpp build reports the ones it was compiled with).
GGML_GPU_BACKENDS = {"cuda": ("CUDA", "VULKAN"), "rocm": ("HIP", "VULKAN"), "intel": ("VULKAN", "SYCL"),
                     "apple": ("METAL",)}
#: Backends whose GPU device count is no proof that work runs there (CTranslate2's PyPI wheel counts
#: a CUDA 13 GPU, then fails at the first GEMM; a ggml build falls back to the CPU silently): an
#: engine load picks their GPU only after a passing probe.
GPU_NEEDS_PROBE = frozenset({"ctranslate2", "ggml"})


def device_kinds(spec: ComponentSpec) -> set[str]:
    """Device kinds a component runs on; a torch component written for "cuda" runs on ROCm torch too."""
    kinds = set(spec.devices)
    if spec.backend == "torch" and "cuda" in kinds:
        kinds.add("rocm")
    return kinds


def bf16_ok(g: GPUInfo) -> bool:
    """The GPU has fast bfloat16 (NVIDIA sm_80+, AMD CDNA2+/RDNA3+)."""
    if g.vendor == "nvidia":
        try:
            return float(g.compute_capability or 0) >= 8.0
        except ValueError:
            return False
    if g.vendor == "amd":
        return (g.arch or "").startswith(("gfx90a", "gfx94", "gfx95", "gfx11", "gfx12"))
    return False


def _torch_blocker(machine: MachineInfo, g: GPUInfo) -> str | None:
    b = machine.backend("torch")
    want = "rocm" if g.vendor == "amd" else "cuda"
    if b.build != want:
        return f"torch is a {b.build} build (needs a {want} build for {g.label})"
    if not g.torch_visible:
        return f"torch does not see {g.label}"
    arch_list = b.get("arch_list") or []
    if (g.vendor == "nvidia" and arch_list and g.arch and g.arch not in arch_list
            and not [a for a in arch_list if a.startswith("compute_")]):
        return f"this torch build has no {g.arch} kernels (arch list: {' '.join(arch_list)})"
    return None


def gpu_blocker(machine: MachineInfo, g: GPUInfo, spec: ComponentSpec) -> str | None:
    """Why ``spec.backend`` cannot use GPU ``g`` (None: it can, as far as detection knows)."""
    b = machine.backend(spec.backend)
    if g.kind not in device_kinds(spec):
        return f"{spec.name} does not run on {g.kind}"
    if not b.installed:
        return f"{spec.backend} is not installed"
    if spec.backend == "torch":
        return _torch_blocker(machine, g)
    if spec.backend == "ctranslate2":
        if g.vendor != "nvidia":
            return "CTranslate2 has no ROCm build"
        if int(b.get("cuda_device_count") or 0) <= g.index:
            return "CTranslate2 sees no CUDA device"
        return None
    if spec.backend == "onnxruntime":
        if not set(b.get("providers") or []) & set(ORT_GPU_PROVIDERS.get(g.kind, ())):
            return f"ONNX Runtime has no {g.kind.upper()} execution provider"
        return None
    if spec.backend == "ggml":
        have = set(b.get("gpu_backends") or [])
        if not have & set(GGML_GPU_BACKENDS.get(g.kind, ())):
            built = ", ".join(sorted(have)) or "CPU only"
            return f"this whisper.cpp build has no GPU backend for {g.kind} (it has: {built})"
        return None
    return None


def gpu_dtypes(machine: MachineInfo, g: GPUInfo, spec: ComponentSpec) -> list[str]:
    """The dtypes to weigh for ``spec`` on GPU ``g``, best first."""
    if spec.backend == "ctranslate2":
        ct = machine.backend("ctranslate2").get("cuda_compute_types") or []
        have = set(ct[g.index]) if g.index < len(ct) else set()
        order = [d for d in CT2_GPU_ORDER if d in spec.dtypes]
        return [d for d in order if not have or d in have]
    if spec.backend == "ggml":
        return list(spec.dtypes)  # the weights' own type: ggml has no load-time cast
    return [d for d in spec.dtypes if not d.startswith("int8")]


def cpu_dtypes(machine: MachineInfo, spec: ComponentSpec) -> list[str]:
    """The dtypes to weigh for ``spec`` on the CPU, best first."""
    if spec.backend == "ctranslate2":
        have = set(machine.backend("ctranslate2").get("cpu_compute_types") or [])
        order = [d for d in CT2_CPU_ORDER if d in spec.dtypes]
        return [d for d in order if not have or d in have] or list(spec.dtypes[-1:])
    if spec.backend == "ggml":
        return list(spec.dtypes)
    if "float32" in spec.dtypes:
        return ["float32"] + [d for d in spec.dtypes if d == "bfloat16" and machine.cpu.has("amx_bf16")]
    return list(spec.dtypes[:1])


def default_dtype(spec: ComponentSpec, device: str) -> str:
    """The dtype for an explicitly requested device (no planning): the backend's first choice there."""
    on_gpu = device.split(":")[0] != "cpu"
    if spec.backend == "ctranslate2":
        order = CT2_GPU_ORDER if on_gpu else CT2_CPU_ORDER
        return next((d for d in order if d in spec.dtypes), spec.dtypes[0] if spec.dtypes else "default")
    if spec.backend in ("onnxruntime", "ggml"):
        return spec.dtypes[0] if spec.dtypes else "float32"
    if on_gpu:
        return next((d for d in spec.dtypes if d in ("float16", "bfloat16")), "float32")
    return "float32"


def probe_component(spec: ComponentSpec) -> str:
    """The generic backend probe that speaks for ``spec`` (see :mod:`voxbox.hardware.probe_targets`)."""
    if spec.backend == "ctranslate2":
        return "generate"
    if spec.backend == "onnxruntime":
        return "session"
    if spec.backend == "ggml":
        return "transcribe"
    return "conv" if spec.kind in CONV_KINDS else "matmul"


def sees_gpu(backend: str) -> bool | None:
    """A cheap answer to "could this backend use any GPU here?" without full detection (which
    imports torch): False lets an engine load settle on the CPU at once; None means "ask detection"."""
    try:
        if backend == "ctranslate2":
            import ctranslate2

            return ctranslate2.get_cuda_device_count() > 0
        if backend == "onnxruntime":
            import onnxruntime as ort

            gpu = {p for ps in ORT_GPU_PROVIDERS.values() for p in ps}
            return bool(gpu & set(ort.get_available_providers()))
        if backend == "ggml":
            from voxbox.hardware.ggml import gpu_backends

            return bool(gpu_backends())
    except Exception:  # noqa: BLE001 - a backend that fails to answer cannot use a GPU either
        return False
    return None
