"""The machine-wide plan behind ``voxbox doctor``: a plan per engine the caller names, and per task
the engine to use, chosen from the plans alone (GPU over CPU, measured speed over order).

The engines come in as data (anything with ``name``, ``task`` and ``components``, e.g. the
registry's :class:`~voxbox.engines.spec.EngineSpec` objects, in order of preference); nothing here
names one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from voxbox.hardware.detect import MachineInfo
from voxbox.hardware.planner import Plan, ProbeInput, _ms, plan, probe_list
from voxbox.hardware.probe import BAD_STATUSES, ProbeResult
from voxbox.hardware.quirks import EnvVar, env_recipe
from voxbox.types import ComponentSpec

__all__ = ["MachinePlan", "PlannedEngine", "choose_plan", "machine_warnings", "plan_machine"]


class PlannedEngine(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def components(self) -> Sequence[ComponentSpec]: ...


@dataclass
class MachinePlan:
    choices: dict[str, tuple[str, str]]  # task -> (engine, reason)
    plans: dict[str, Plan]
    env: list[EnvVar]
    warnings: list[str]

    @property
    def asr(self) -> tuple[str, str]:
        return self.choices["asr"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"choices": {t: {"engine": e, "reason": r} for t, (e, r) in self.choices.items()}}
        if "asr" in self.choices:
            out["asr_engine"] = out["choices"]["asr"]
        out.update({"plans": {k: v.to_dict() for k, v in self.plans.items()},
                    "env": [asdict(e) for e in self.env], "warnings": list(self.warnings)})
        return out


def _runnable(p: Plan) -> bool:
    return p.ok and not p.missing_backends


def _measured(tier: list[Plan]) -> tuple[Plan, str] | None:
    """A plan of ``tier`` clearly faster (10%) than the first, both timed by probes of the same workload."""
    first = tier[0]
    f_s, work = first.main.probe_seconds, first.main.workload
    if f_s is None or not work:
        return None
    peers = [p for p in tier[1:] if p.main.probe_seconds is not None and p.main.workload == work]
    if not peers:
        return None
    best = min(peers, key=lambda p: p.main.probe_seconds or 0.0)
    b_s = best.main.probe_seconds or 0.0
    if b_s >= 0.9 * f_s:
        return None
    return best, (f"{best.engine} on {best.main.device} in {best.main.dtype}: the fastest measured option "
                  f"({_ms(b_s)} vs {_ms(f_s)} for {first.engine} on the same {work} probe).")


def _why_not(p: Plan) -> str:
    if p.missing_backends:
        return f"{', '.join(p.missing_backends)} is not installed"
    if p.main.passed_over:
        return "; ".join(p.main.passed_over[:2])
    return f"it was not placed on a GPU ({p.main.reason.rstrip('.')})"


def choose_plan(task: str, plans: Sequence[Plan], machine: MachineInfo) -> tuple[Plan, str]:
    """The plan to use for ``task`` among ``plans`` (in order of preference), and why.

    GPU plans whose backends are installed come first, then CPU ones; within a tier the first in
    order wins unless every member was timed by a probe on the same workload and one is clearly
    faster. With nothing runnable, the first plan stands (its warnings say what is missing).
    """
    if not plans:
        raise ValueError(f"no {task} engines to choose from")
    gpu = [p for p in plans if _runnable(p) and p.main.on_gpu]
    if gpu:
        measured = _measured(gpu)
        if measured is not None:
            return measured
        best = gpu[0]
        if best is plans[0]:
            return best, f"{best.engine} runs on {best.main.device} in {best.main.dtype}."
        return best, (f"{best.engine} on {best.main.device} in {best.main.dtype} rather than "
                      f"{plans[0].engine}: {_why_not(plans[0])}.")
    cpu = [p for p in plans if _runnable(p)]
    measured = _measured(cpu) if cpu else None
    if measured is not None:
        return measured
    best = cpu[0] if cpu else plans[0]
    why = "no GPU" if not machine.gpus else "no GPU plan is usable"
    return best, (f"{best.engine} on the CPU in {best.main.dtype} ({why}; the first {task} engine in order of "
                  "preference).")


def plan_machine(engines: Iterable[PlannedEngine], machine: MachineInfo | None = None, probes: ProbeInput = None,
                 pins: Mapping[str, Any] | None = None, *, choose_for: Sequence[str] = ("asr",)) -> MachinePlan:
    """What ``doctor`` shows: a plan per engine, the engine to use per task in ``choose_for``, the
    environment recipe and the warnings."""
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    plist = probe_list(probes)
    engines = list(engines)
    plans = {e.name: plan(e.components, machine, plist, pins, label=e.name) for e in engines}
    choices: dict[str, tuple[str, str]] = {}
    for task in choose_for:
        cands = [plans[e.name] for e in engines if e.task == task and e.components]
        if cands:
            chosen, reason = choose_plan(task, cands, machine)
            choices[task] = (chosen.engine, reason)
    warnings = machine_warnings(machine, plist)
    for p in plans.values():
        warnings.extend(w for w in p.warnings if w not in warnings)
    return MachinePlan(choices=choices, plans=plans, env=env_recipe(machine), warnings=warnings)


def _probe_warnings(probes: list[ProbeResult]) -> list[str]:
    w: list[str] = []
    bad_ct2 = [p for p in probes if p.engine == "ctranslate2" and p.device != "cpu" and p.status in BAD_STATUSES]
    if bad_ct2 and not [p for p in probes if p.engine == "ctranslate2" and p.device != "cpu" and p.usable]:
        w.append(f"CTranslate2 reports CUDA devices but its GPU probe failed ({bad_ct2[0].summary()}): "
                 "its models run on the CPU.")
    for p in probes:
        if p.status == "silent_fallback":
            w.append(f"Silent CPU fallback: {p.engine} {p.component} asked for {p.device}: {p.message}.")
        elif p.status == "hang":
            w.append(f"Hang: {p.engine} {p.component} on {p.device} {p.dtype or ''} did not finish ({p.message}).")
    return w


def machine_warnings(machine: MachineInfo, probes: list[ProbeResult]) -> list[str]:
    """What a person should know about this machine before any engine is chosen (per backend)."""
    w: list[str] = []
    torch, ct2, ort = machine.backend("torch"), machine.backend("ctranslate2"), machine.backend("onnxruntime")
    if not machine.gpus:
        w.append("No GPU found: everything runs on the CPU.")
    for g in machine.gpus:
        if not g.torch_visible:
            w.append(f"{g.label} is present but torch does not see it"
                     + (f" (torch is a {torch.build} build)" if torch.installed else " (torch is not installed)") + ".")
    nvidia = any(g.vendor == "nvidia" for g in machine.gpus)
    if ct2.installed and machine.gpus and not int(ct2.get("cuda_device_count") or 0):
        w.append("CTranslate2 sees no GPU: its models run on the CPU.")
    if nvidia and ct2.installed and int(ct2.get("cuda_device_count") or 0) and not probes:
        w.append("CTranslate2 CUDA is not verified yet: run `voxbox doctor --probe` (a device count is not proof).")
    if machine.gpus and ort.installed and ort.build != "gpu":
        w.append("ONNX Runtime has no GPU provider: its models run on the CPU (small voices are faster than "
                 "real time there).")
    for name, b in machine.backends.items():
        if b.installed and b.error:
            w.append(f"{name} is installed but failed while listing devices: {b.error}")
    return w + _probe_warnings(probes)
