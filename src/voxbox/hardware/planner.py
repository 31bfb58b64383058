"""The placement planner: device and dtype per component, explained in one sentence each.

One entry, :func:`plan`, works purely from data: the components an engine declares
(:class:`voxbox.types.ComponentSpec`), a :class:`MachineInfo` (live or recorded), probe results,
pins and the quirks table. For each component it lists the options (each GPU the backend can use x
each supported dtype, then the CPU; :mod:`voxbox.hardware.options`), removes those a quirk, a failed
probe or the hardware rules out, never keeps one that does not fit the device's free memory minus
headroom (:mod:`voxbox.hardware.memory`), prefers the fastest probed option, and otherwise the first
GPU option in the component's dtype order. Pins (``--device``, ``--dtype``, per-component settings)
win; a pin that contradicts a probe or a quirk is kept with a warning (:mod:`voxbox.hardware.pins`).

Engines reach it through :mod:`voxbox.engines.placement`; ``voxbox doctor`` through
:mod:`voxbox.hardware.machine_plan`. Nothing here names an engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from voxbox.hardware.detect import MachineInfo
from voxbox.hardware.memory import MemoryBudget, bytes_for
from voxbox.hardware.options import Option, component_options
from voxbox.hardware.pins import component_pin, pinned_placement
from voxbox.hardware.probe import ProbeResult
from voxbox.hardware.quirks import EnvVar, Quirk, env_recipe, load_quirks, match_quirks
from voxbox.types import ComponentSpec

__all__ = ["Placement", "Plan", "ProbeInput", "plan", "probe_list"]

ProbeInput = Iterable[ProbeResult] | Mapping[Any, ProbeResult] | None


def _ms(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1000:.1f} ms"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


@dataclass
class Placement:
    """Where one component runs: device and dtype names (not torch objects) and why."""

    component: str
    device: str | None  # "cpu", "cuda", "cuda:1" (torch device string; ROCm torch uses "cuda" too); None: unplaced
    dtype: str | None  # torch dtype name, CT2 compute type or ggml weight type
    reason: str  # one sentence
    backend: str = "torch"
    device_kind: str | None = None  # "cpu", "cuda" (NVIDIA), "rocm" (AMD)
    gpu: int | None = None
    bytes: int = 0
    quirks: list[str] = field(default_factory=list)  # ids cited in the reason
    pinned: bool = False
    probe: str | None = None  # the probe verdict this choice relied on
    probe_seconds: float | None = None  # its timed work, when it was timed
    probe_target: str | None = None
    workload: str | None = None  # what the probe timed, when it names it (comparable across backends)
    passed_over: list[str] = field(default_factory=list)  # GPU options not taken, each with why

    @property
    def placed(self) -> bool:
        return self.device is not None

    @property
    def on_gpu(self) -> bool:
        return self.device_kind not in (None, "cpu")


@dataclass
class Plan:
    """Placements for one set of components (one engine), with the environment and warnings."""

    engine: str  # a label (the engine's name); the planner does not interpret it
    placements: list[Placement]
    env: list[EnvVar] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attention: str | None = None  # "sdpa" when a quirk asks for it
    missing_backends: list[str] = field(default_factory=list)

    def placement(self, component: str) -> Placement:
        for p in self.placements:
            if p.component == component:
                return p
        raise KeyError(component)

    def __getitem__(self, component: str) -> Placement:
        return self.placement(component)

    @property
    def ok(self) -> bool:
        return all(p.placed for p in self.placements)

    @property
    def main(self) -> Placement:
        """The largest component's placement (what a one-device engine uses)."""
        return max(self.placements, key=lambda p: p.bytes) if self.placements else Placement("", None, None, "")

    @property
    def device(self) -> str | None:
        return self.main.device

    @property
    def dtype(self) -> str | None:
        return self.main.dtype

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _placement(spec: ComponentSpec, o: Option, need: int, reason: str, cites: list[str],
               passed_over: list[str]) -> Placement:
    probe = o.probe
    return Placement(spec.name, o.device, o.dtype, reason, backend=spec.backend,
                     device_kind="cpu" if o.gpu is None else o.gpu.kind,
                     gpu=None if o.gpu is None else o.gpu.index, bytes=need, quirks=cites,
                     probe=None if probe is None else probe.summary(),
                     probe_seconds=probe.seconds if probe is not None and probe.ok else None,
                     probe_target=None if probe is None else probe.target,
                     workload=None if probe is None else probe.details.get("workload"), passed_over=passed_over)


def _fastest(usable: list[Option]) -> tuple[Option, str | None]:
    """The first usable option, or a clearly faster probed one (10%: fast kernels time noisily)."""
    best = usable[0]
    timed = [o for o in usable if o.probe is not None and o.probe.ok and o.probe.seconds is not None]
    if best.probe is None or not best.probe.ok or best.probe.seconds is None or len(timed) < 2:
        return best, None
    same = [o for o in timed if o.probe is not None and o.probe.target == best.probe.target]
    fastest = min(same, key=lambda o: o.probe.seconds if o.probe and o.probe.seconds is not None else 1e9)
    f_s = fastest.probe.seconds if fastest.probe is not None else None
    if fastest is best or f_s is None or f_s >= 0.9 * best.probe.seconds:
        return best, None
    return fastest, (f"the fastest probed option ({_ms(f_s)} vs {_ms(best.probe.seconds)} for "
                     f"{best.dtype} on {best.where})")


def _because(spec: ComponentSpec, best: Option, opts: list[Option]) -> str:
    if best.gpu is not None:
        because = "the GPU is usable and it fits"
        if best.probe is not None and best.probe.usable:
            because += f" (probe {best.probe.summary()})"
        return because
    if spec.devices == ("cpu",) or (spec.auto_devices is not None and "cpu" in spec.auto_devices
                                    and len(spec.auto_devices) == 1):
        return f"{spec.name} runs on the CPU" + (" only" if spec.devices == ("cpu",) else " unless a GPU is asked for")
    return "no GPU option is usable" if any(o.gpu is not None for o in opts) else "this machine has no GPU"


def _choose(label: str, spec: ComponentSpec, machine: MachineInfo, probes: list[ProbeResult],
            quirks: tuple[Quirk, ...], budget: MemoryBudget, pins: Mapping[str, Any] | None,
            warnings: list[str], verified_only: bool) -> Placement:
    opts = component_options(label, spec, machine, probes, quirks, verified_only=verified_only)
    for o in opts:
        need = bytes_for(spec, o.dtype)
        if o.excluded is None and not budget.fits(o.device, need):
            o.excluded = (
                f"{_gb(need)} does not fit in the {_gb(budget.left(o.device))} free on {o.where} after headroom"
            )
    pin_dev, pin_dt = component_pin(pins, spec.name)
    if pin_dev is not None or pin_dt is not None:
        return pinned_placement(label, spec, machine, opts, pin_dev, pin_dt, budget, warnings)
    usable = [o for o in opts if o.excluded is None]
    if spec.auto_devices is not None:  # devices it goes to unasked, when one of them can hold it
        usable = [o for o in usable if (o.gpu.kind if o.gpu else "cpu") in spec.auto_devices] or usable
    if spec.auto_dtypes is not None:  # dtypes it runs in unasked, when one of them is usable
        usable = [o for o in usable if o.dtype in spec.auto_dtypes] or usable
    if not usable:
        why = "; ".join(dict.fromkeys(o.excluded or "" for o in opts))
        warnings.append(f"{label}: {spec.name} was not planned: no device can hold it ({why}).")
        return Placement(spec.name, None, None, f"Not planned: {why}.", backend=spec.backend,
                         quirks=sorted({q for o in opts for q in o.quirks}))
    # heuristic order: GPUs (in order, dtype preference) then the CPU; slow probes last
    usable.sort(key=lambda o: (o.probe is not None and o.probe.status == "slow",))
    best, because = _fastest(usable)
    need = bytes_for(spec, best.dtype)
    free_before = budget.left(best.device)
    budget.take(best.device, need)
    skipped = [o.excluded for o in opts if o.excluded and o is not best and (o.gpu is not None or best.gpu is None)]
    skipped = list(dict.fromkeys(skipped))
    cites = sorted({q for o in opts for q in o.quirks if o is best or o.excluded})
    reason = (f"{spec.name} on {best.where} in {best.dtype}: {because or _because(spec, best, opts)}"
              + (f"; {'; '.join(skipped[:3])}" if skipped else "") + f"; needs {_gb(need)} of {_gb(free_before)} free.")
    if best.probe is not None and best.probe.status == "slow":
        warnings.append(f"{label}: {spec.name} on {best.device} {best.dtype} probed slow: {best.probe.message}")
    passed_over = [o.excluded for o in opts if o.gpu is not None and o.excluded] if best.gpu is None else []
    return _placement(spec, best, need, reason, cites, list(dict.fromkeys(x for x in passed_over if x)))


def probe_list(probes: ProbeInput) -> list[ProbeResult]:
    if probes is None:
        return []
    if isinstance(probes, Mapping):
        return list(probes.values())
    return list(probes)


def _notes(machine: MachineInfo, placements: list[Placement], backends: set[str],
           quirks: tuple[Quirk, ...]) -> tuple[list[str], str | None]:
    notes: list[str] = []
    attention = None
    for p in placements:
        g = machine.gpu(p.gpu) if p.gpu is not None else None
        if g is None:
            continue
        for q in match_quirks(machine, g, partial=True, quirks=quirks):
            if q.effect.get("attention") and "torch" in backends:
                attention = q.effect["attention"]
                note = f"Use {attention} attention on {g.label} ({q.cite()}: {q.title})."
                if note not in notes:
                    notes.append(note)
    return notes, attention


def plan(components: Sequence[ComponentSpec], machine: MachineInfo | None = None, probes: ProbeInput = None,
         pins: Mapping[str, Any] | None = None, *, label: str = "", quirks: tuple[Quirk, ...] | None = None,
         budget: MemoryBudget | None = None, verified_only: bool = False) -> Plan:
    """Place ``components`` on ``machine`` (default: this one, detected).

    ``pins``: ``{"device": "cuda", "dtype": "float16", "components": {"autoencoder": {"device": "cpu"}}}``
    (see :func:`voxbox.hardware.pins.pins_from`). ``probes``: probe results to rely on (none by
    default, so a plan from a recorded machine is deterministic). ``label`` names the plan (an
    engine's name) and matches probes an engine ran of its own components. ``verified_only``: a GPU
    whose backend's device count is no proof needs a passing probe (what an engine load uses).
    """
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    components = list(components)
    quirks = quirks if quirks is not None else load_quirks()
    plist = probe_list(probes)
    budget = budget or MemoryBudget(machine)
    warnings: list[str] = []
    # big components first, so a small one never takes the room a big one needs
    order = sorted(range(len(components)), key=lambda i: -components[i].params)
    placed = {i: _choose(label, components[i], machine, plist, quirks, budget, pins, warnings, verified_only)
              for i in order}
    placements = [placed[i] for i in range(len(components))]
    backends = {c.backend for c in components}
    notes, attention = _notes(machine, placements, backends, quirks)
    missing = [b for b in sorted(backends) if not machine.backend(b).installed]
    for b in missing:
        warnings.append(f"{label}: its backend {b} is not installed here.")
    used_gpus = {p.gpu for p in placements if p.gpu is not None}
    env = [e for e in env_recipe(machine) if e.gpu is None or e.gpu in used_gpus]
    return Plan(label, placements, env=env, warnings=warnings, notes=notes, attention=attention,
                missing_backends=missing)
