"""The one way an engine turns ``device="auto"`` into a device and dtype per component.

Engines declare their components (:class:`voxbox.types.ComponentSpec`, in their ``EngineSpec``, or
the real sizes from a loaded model) and call one of:

* :func:`auto_device` — single-component engines on any backend (CTranslate2, ONNX Runtime, ggml,
  torch): ``(device, dtype, reason)``. An explicit device is kept (with the backend's default dtype
  there). ``auto`` asks the planner with the on-disk probe verdicts; a backend whose device count is
  no proof (CTranslate2, ggml) gets a GPU only after a passing probe, which runs now (once, cached)
  when ``verify`` and none is cached. A backend that sees no GPU at all settles on the CPU without
  full detection (no torch import).
* :func:`auto_plan` — the whole :class:`~voxbox.hardware.planner.Plan` for device "auto" (no probe
  is run; components no device can hold fall back to the CPU in float32, reason kept).
* :func:`resolve_placement` — multi-component torch engines (echo-tts, fish-s2): torch devices and
  dtypes per component from ``device``/``dtype``/per-component pins, with these rules:

  1. ``device="auto"`` with no ``dtype``: the planner decides per component (detection, cached
     probe verdicts, quirks such as "bf16 hangs gfx1151" or "conv decoders hang MIOpen", free
     memory). Its one-sentence reasons are returned so the engine can report them.
  2. An explicit ``device`` (and optional ``dtype`` for the transformers): every component on that
     device; on a GPU transformers default to bfloat16 and conv-heavy components (codec,
     autoencoder) to float32; on the CPU everything is float32.
  3. ``placement`` pins single components: ``"cuda:float16"``, ``"cpu"``, ``(device, dtype)`` or
     ``{"device": ..., "dtype": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voxbox.errors import BadInputError
from voxbox.types import ComponentSpec

if TYPE_CHECKING:
    from voxbox.hardware.detect import MachineInfo
    from voxbox.hardware.planner import Plan
    from voxbox.hardware.probe import ProbeResult

__all__ = ["DTYPES", "TorchPlacement", "auto_device", "auto_plan", "resolve_placement", "torch_device", "torch_dtype"]

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
          "float32": "float32", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class TorchPlacement:
    """A component's torch device and dtype (objects, ready for ``.to()``) and why."""

    device: Any  # torch.device
    dtype: Any  # torch.dtype
    reason: str

    def __iter__(self) -> Iterator[Any]:  # unpacks as (device, dtype)
        return iter((self.device, self.dtype))


def _cached_probes(machine: MachineInfo) -> list[ProbeResult]:
    try:
        from voxbox.hardware.probe import ProbeCache

        return ProbeCache().results(machine.fingerprint_key())
    except Exception:  # noqa: BLE001 - an unreadable cache means no verdicts
        return []


def auto_plan(label: str, components: Sequence[ComponentSpec], machine: MachineInfo | None = None) -> Plan:
    """The plan an engine follows for device "auto": detection (cached per process), the on-disk
    probe verdicts from ``voxbox doctor --probe`` and the quirks decide; no probe is run here, so
    loading stays fast. Components no device can hold go to the CPU in float32, with that reason."""
    from voxbox.hardware.detect import detect
    from voxbox.hardware.planner import plan

    machine = machine or detect()
    out = plan(components, machine, _cached_probes(machine), label=label)
    for p in out.placements:
        if not p.placed:
            p.device, p.dtype, p.device_kind = "cpu", "float32", "cpu"
            p.reason = f"{p.reason} Falling back to the CPU in float32."
    return out


def _verify_gpus(label: str, component: ComponentSpec, machine: MachineInfo,
                 probes: list[ProbeResult]) -> list[ProbeResult]:
    """Run (and cache) the backend's probes on the GPUs a trusting plan would use but a strict one
    cannot yet: a device count is no proof for some backends."""
    from voxbox.hardware.planner import plan
    from voxbox.hardware.probe import ProbeSpec, run_probe
    from voxbox.hardware.probe_sets import backend_probes

    trusting = plan([component], machine, probes, label=label).main
    if not trusting.on_gpu or trusting.gpu is None:
        return []
    g = machine.gpu(trusting.gpu)
    specs = backend_probes(machine, component.backend, g) if g is not None else []
    first = next((s for s in specs if isinstance(s, ProbeSpec)), None)  # the backend's preferred dtype there
    return [] if first is None else [run_probe(first, machine=machine)]


def auto_device(label: str, component: ComponentSpec, requested: str | None = None, *,
                machine: MachineInfo | None = None, verify: bool = True) -> tuple[str, str, str]:
    """(device, dtype, reason) for a one-component engine; see the module docstring."""
    from voxbox.hardware.backends import GPU_NEEDS_PROBE, default_dtype, sees_gpu
    from voxbox.hardware.detect import detect
    from voxbox.hardware.planner import plan

    if requested not in (None, "", "auto"):
        dev = str(requested)
        return dev, default_dtype(component, dev), f"device {dev} was requested explicitly."
    probes: list[ProbeResult] = []
    if machine is None and (component.auto_devices == ("cpu",) or sees_gpu(component.backend) is False):
        machine = detect(backends=(component.backend,))  # the CPU either way: no torch import
    else:
        machine = machine or detect()
        probes = _cached_probes(machine)
    strict = plan([component], machine, probes, label=label, verified_only=True)
    if verify and component.backend in GPU_NEEDS_PROBE and not strict.main.on_gpu and machine.gpus:
        fresh = _verify_gpus(label, component, machine, probes)
        if fresh:
            strict = plan([component], machine, probes + fresh, label=label, verified_only=True)
    p = strict.main
    if not p.placed:
        cpu = default_dtype(component, "cpu")
        return "cpu", cpu, f"{p.reason} Falling back to the CPU in {cpu}."
    return p.device or "cpu", p.dtype or default_dtype(component, "cpu"), p.reason


def torch_device(name: Any) -> Any:
    """A torch.device from a name; ``rocm``/``hip`` mean torch's "cuda" (HIP builds); fails clearly
    when a GPU is asked for and torch sees none."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("rocm", "hip"):
        name = "cuda"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise BadInputError(f"bad device {name!r}: {exc}", param="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {name!r} asked for, but torch sees no CUDA/ROCm GPU", param="device")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def torch_dtype(name: Any) -> Any:
    import torch

    if isinstance(name, torch.dtype):
        return name
    key = DTYPES.get(str(name).replace("torch.", "").lower())
    if key is None:
        raise BadInputError(f"bad dtype {name!r}; use bfloat16, float16 or float32", param="dtype")
    return getattr(torch, key)


def _parse_pin(spec: Any) -> tuple[Any, Any]:
    if isinstance(spec, Mapping):
        return spec.get("device"), spec.get("dtype")
    if isinstance(spec, (tuple, list)):
        dev, dt = (list(spec) + [None, None])[:2]
        return dev, dt
    head, _, tail = str(spec).rpartition(":")
    if head and tail.lower() in DTYPES:
        return head, tail
    return str(spec), None


def _auto(label: str, components: Sequence[ComponentSpec], follows: Mapping[str, str]) -> dict[str, TorchPlacement]:
    plan = auto_plan(label, components)
    planned = {p.component: p for p in plan.placements}
    out: dict[str, TorchPlacement] = {}
    for c in components:
        p = planned.get(follows.get(c.name, c.name)) or plan.main
        dev = torch_device(p.device or "cpu")
        # CPU float16/bfloat16 kernels are slow or missing for convs: keep the planner's word for GPUs only.
        dt = p.dtype if dev.type != "cpu" else "float32"
        out[c.name] = TorchPlacement(dev, torch_dtype(dt or "float32"), p.reason)
    return out


def resolve_placement(label: str, components: Sequence[ComponentSpec], *, device: Any = "auto", dtype: Any = None,
                      placement: Mapping[str, Any] | None = None,
                      follows: Mapping[str, str] | None = None) -> dict[str, TorchPlacement]:
    """Torch (device, dtype, reason) per component; see the module docstring for the rules.

    Conv-heavy components (kind codec/autoencoder/vocoder/conv) default to float32 on a GPU.
    ``follows``: components that take another's planned placement (e.g. echo's speaker encoder
    follows its text encoder).
    """
    from voxbox.hardware.backends import CONV_KINDS

    names = tuple(c.name for c in components)
    conv = {c.name for c in components if c.kind in CONV_KINDS}
    if device in (None, "", "auto") and dtype is None:
        out = _auto(label, components, dict(follows or {}))
    else:
        base = torch_device(device)
        out = {}
        for comp in names:
            if base.type == "cpu":
                dt = dtype if (dtype and comp not in conv) else "float32"
            else:
                dt = "float32" if comp in conv else (dtype or "bfloat16")
            out[comp] = TorchPlacement(
                base, torch_dtype(dt), f"{comp} on {base} in {dt}: device {device!r} was requested."
            )
    for comp, pin in (placement or {}).items():
        if comp not in names:
            raise BadInputError(f"unknown {label} component {comp!r}; components: {', '.join(names)}",
                                param="placement")
        dev_name, dt_name = _parse_pin(pin)
        dev = torch_device(dev_name) if dev_name else out[comp].device
        dt = dt_name or ("float32" if (dev.type == "cpu" or comp in conv) else "bfloat16")
        out[comp] = TorchPlacement(dev, torch_dtype(dt), f"{comp} on {dev} in {dt}: pinned by the caller.")
    return out
