"""Which probes to run on a machine: per backend and device, skipping what a hard quirk forbids."""

from __future__ import annotations

from voxbox.hardware.detect import GPUInfo, MachineInfo
from voxbox.hardware.probe import ProbeResult, ProbeSpec
from voxbox.hardware.quirks import match_quirks

__all__ = ["backend_probes", "standard_probes"]

T = "voxbox.hardware.probe_targets:"
Item = ProbeSpec | ProbeResult


def _cpu_probes(machine: MachineInfo, timeout_s: float) -> list[Item]:
    out: list[Item] = []
    if machine.backend("torch").installed:
        out.append(
            ProbeSpec(T + "torch_matmul", "cpu", "float32", engine="torch", component="matmul", timeout_s=timeout_s)
        )
    if machine.backend("ctranslate2").installed:
        out.append(ProbeSpec(T + "ct2_generate", "cpu", "int8", engine="ctranslate2", component="generate",
                             timeout_s=timeout_s))
    if machine.backend("onnxruntime").installed:
        out.append(
            ProbeSpec(T + "ort_session", "cpu", None, engine="onnxruntime", component="session", timeout_s=timeout_s)
        )
    if machine.backend("ggml").installed:
        out.append(ProbeSpec(T + "ggml_transcribe", "cpu", None, engine="ggml", component="transcribe",
                             timeout_s=timeout_s))
    return out


def _torch_gpu(machine: MachineInfo, g: GPUInfo, timeout_s: float) -> list[Item]:
    out: list[Item] = []
    for comp, target, dtypes in (("matmul", "torch_matmul", ("float16", "bfloat16")),
                                 ("conv", "torch_conv", ("float16", "float32"))):
        kind = "conv" if comp == "conv" else "transformer"
        for dt in dtypes:
            hard = [q for q in match_quirks(machine, g, backend="torch", component_kind=kind, dtype=dt)
                    if q.severity == "hard" and (dt in q.avoid_dtypes or kind in q.cpu_for_kinds)]
            kwargs = {"m": 2048, "n": 5888, "k": 2048} if comp == "matmul" else {}
            if hard:
                out.append(ProbeResult("skipped", T + target, g.torch_device, dt, "torch", comp,
                                       message=f"not probed: {hard[0].cite()} ({hard[0].title})"))
            else:
                out.append(ProbeSpec(T + target, g.torch_device, dt, engine="torch", component=comp, kwargs=kwargs,
                                     timeout_s=timeout_s))
    return out


def _ort_gpu(machine: MachineInfo, g: GPUInfo, timeout_s: float) -> list[Item]:
    provs = set(machine.backend("onnxruntime").get("providers") or [])
    dev = g.torch_device
    if g.vendor == "nvidia" and "CUDAExecutionProvider" in provs:
        return [ProbeSpec(T + "ort_session", dev, None, engine="onnxruntime", component="session", timeout_s=timeout_s)]
    if g.vendor == "amd" and provs & {"ROCMExecutionProvider", "MIGraphXExecutionProvider"}:
        prov = "ROCMExecutionProvider" if "ROCMExecutionProvider" in provs else "MIGraphXExecutionProvider"
        return [ProbeSpec(T + "ort_session", "rocm" + dev[4:], None, engine="onnxruntime", component="session",
                          kwargs={"provider": prov}, timeout_s=timeout_s)]
    return []


def backend_probes(machine: MachineInfo, backend: str, g: GPUInfo | None, timeout_s: float = 90.0) -> list[Item]:
    """The probes that speak for ``backend`` on GPU ``g`` (None: the CPU), best dtype first."""
    if g is None:
        return [p for p in _cpu_probes(machine, timeout_s) if p.engine == backend]
    b = machine.backend(backend)
    if not b.installed:
        return []
    if backend == "torch":
        return _torch_gpu(machine, g, timeout_s) if g.torch_visible and b.build in ("cuda", "rocm") else []
    if backend == "ctranslate2":
        if g.vendor != "nvidia" or int(b.get("cuda_device_count") or 0) <= g.index:
            return []
        return [ProbeSpec(T + "ct2_generate", g.torch_device, dt, engine="ctranslate2", component="generate",
                          timeout_s=timeout_s) for dt in ("float16", "int8_float16")]
    if backend == "onnxruntime":
        return _ort_gpu(machine, g, timeout_s)
    if backend == "ggml":
        if not b.get("gpu_backends"):
            return []
        return [ProbeSpec(T + "ggml_transcribe", g.torch_device, None, engine="ggml", component="transcribe",
                          kwargs={"gpu_device": g.index}, timeout_s=timeout_s)]
    return []


def standard_probes(machine: MachineInfo, timeout_s: float = 90.0) -> list[Item]:
    """The probes ``doctor --probe`` runs here; a hard quirk turns a probe into a ``skipped`` result."""
    out = _cpu_probes(machine, timeout_s)
    for g in machine.gpus:
        for backend in ("torch", "ctranslate2", "onnxruntime", "ggml"):
            out.extend(backend_probes(machine, backend, g, timeout_s))
    return out
