"""The options the planner weighs for one component: each GPU the backend can use x each dtype,
then the CPU, each marked with why it is ruled out (a quirk, a failed probe, the hardware)."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxbox.hardware.backends import (
    GPU_NEEDS_PROBE,
    bf16_ok,
    cpu_dtypes,
    device_kinds,
    gpu_blocker,
    gpu_dtypes,
    probe_component,
)
from voxbox.hardware.detect import GPUInfo, MachineInfo
from voxbox.hardware.probe import BAD_STATUSES, ProbeResult
from voxbox.hardware.quirks import Quirk, match_quirks
from voxbox.types import ComponentSpec

__all__ = ["Option", "component_options"]


@dataclass
class Option:
    """One (device, dtype) the planner weighs for a component, and why not (``excluded``)."""

    gpu: GPUInfo | None
    dtype: str
    excluded: str | None = None  # why not (a clause)
    quirks: list[str] = field(default_factory=list)
    probe: ProbeResult | None = None
    hard: bool = False  # excluded by a hard quirk / hardware (a pin still gets a warning)

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else self.gpu.torch_device

    @property
    def where(self) -> str:
        return "the CPU" if self.gpu is None else self.gpu.label


def same_device(probe_device: str, option_device: str) -> bool:
    def norm(d: str) -> tuple[str, int]:
        kind, _, idx = d.partition(":")
        kind = "gpu" if kind in ("cuda", "rocm", "hip", "gpu", "vulkan") else kind
        return kind, int(idx or 0)

    return norm(probe_device) == norm(option_device)


def evidence(label: str, spec: ComponentSpec, opt: Option,
             probes: list[ProbeResult]) -> tuple[ProbeResult | None, ProbeResult | None]:
    """(probe for this exact option, failing probe for this device at another dtype).

    A probe speaks for an option when it ran on the option's device and is either this engine's own
    probe of this component (``engine == label``) or the backend's generic probe.
    """
    generic = probe_component(spec)
    exact = [
        p
        for p in probes
        if same_device(p.device, opt.device)
        and ((p.engine == label and p.component == spec.name) or (p.engine == spec.backend and p.component == generic))
    ]
    same = exact if spec.backend in ("onnxruntime", "ggml") else [p for p in exact if p.dtype == opt.dtype]
    hit = None
    if same:
        same.sort(key=lambda p: (p.engine != label, p.status not in BAD_STATUSES))  # own probe first
        hit = same[0]
    device_bad = None
    # a CT2/ORT/ggml failure at one dtype (a missing library, no provider) condemns the device; torch
    # failures are dtype-specific (a bf16 hang says nothing about fp16)
    if spec.backend != "torch" and exact and all(p.status in BAD_STATUSES for p in exact):
        device_bad = exact[0]
    return hit, device_bad


def _quirk_clause(q: Quirk, spec: ComponentSpec, dt: str, g: GPUInfo) -> str:
    what = (f"{dt} avoided" if dt in q.avoid_dtypes else
            f"{spec.kind} kept off GPU {g.index}" if spec.kind in q.cpu_for_kinds else
            f"{spec.backend} cannot use GPU {g.index}")
    return f"{what} ({q.cite()})"


def _gpu_option(label: str, spec: ComponentSpec, machine: MachineInfo, g: GPUInfo, dt: str, qs: list[Quirk],
                probes: list[ProbeResult], verified_only: bool) -> Option:
    o = Option(g, dt)
    o.probe, dev_bad = evidence(label, spec, o, probes)
    probe_ok = o.probe is not None and o.probe.usable
    for q in qs:
        if q.severity == "soft" and probe_ok:
            o.quirks.append(q.id)  # cited: a passing probe lifted it
            continue
        if o.excluded is None:
            o.excluded, o.hard = _quirk_clause(q, spec, dt, g), q.severity == "hard"
        o.quirks.append(q.id)
    blocker = gpu_blocker(machine, g, spec)
    if o.excluded is None and blocker is not None:
        o.excluded, o.hard = blocker, True
    if o.excluded is None and spec.backend == "torch" and dt == "bfloat16" and not bf16_ok(g):
        o.excluded, o.hard = f"{g.label} has no fast bfloat16", True
    if o.excluded is None and o.probe is not None and o.probe.status in BAD_STATUSES:
        o.excluded = f"the {o.probe.target.split(':')[-1]} probe on {o.device} {dt} gave {o.probe.summary()}"
    elif o.excluded is None and o.probe is None and dev_bad is not None:
        o.excluded = f"{spec.backend} probes on {o.device} failed ({dev_bad.summary()})"
    if o.excluded is None and verified_only and spec.backend in GPU_NEEDS_PROBE and not probe_ok:
        o.excluded = f"{spec.backend} on {g.label} is not verified by a probe yet (`voxbox doctor --probe`)"
    return o


def component_options(label: str, spec: ComponentSpec, machine: MachineInfo, probes: list[ProbeResult],
                      quirks: tuple[Quirk, ...], *, verified_only: bool = False) -> list[Option]:
    """Every option for ``spec`` on ``machine``: GPUs in order (dtype preference within each), then
    the CPU. ``verified_only``: GPU options of backends whose device count is no proof
    (:data:`~voxbox.hardware.backends.GPU_NEEDS_PROBE`) need a passing probe."""
    opts: list[Option] = []
    kinds = device_kinds(spec)
    for g in machine.gpus:
        for dt in gpu_dtypes(machine, g, spec) or list(spec.dtypes[:1]):
            qs = match_quirks(machine, g, backend=spec.backend, component_kind=spec.kind, dtype=dt, quirks=quirks)
            qs = [q for q in qs if q.backend_unusable or spec.kind in q.cpu_for_kinds or dt in q.avoid_dtypes]
            qs.sort(key=lambda q: dt in q.avoid_dtypes and not (q.backend_unusable or spec.kind in q.cpu_for_kinds))
            if g.kind not in kinds and not qs:
                break  # the component does not run on this kind of GPU: not an option at all
            opts.append(_gpu_option(label, spec, machine, g, dt, qs, probes, verified_only))
    for dt in cpu_dtypes(machine, spec):
        o = Option(None, dt)
        if "cpu" not in spec.devices:
            o.excluded, o.hard = f"{spec.name} does not run on the CPU", True
        o.probe, _ = evidence(label, spec, o, probes)
        if o.excluded is None and o.probe is not None and o.probe.status in BAD_STATUSES:
            o.excluded = f"the CPU probe gave {o.probe.summary()}"
        opts.append(o)
    return opts
