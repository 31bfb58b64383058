"""Known hardware quirks (``quirks.yaml``) and the matcher that applies them to a plan.

A quirk matches a *context*: a machine, optionally one of its GPUs, and optionally the option the
planner is weighing (backend, component kind, dtype). Every condition a quirk names must hold.
With ``partial=True`` conditions on fields the context leaves unset are skipped, which is how
``doctor`` lists the quirks that concern a machine before any component is planned.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from voxbox.hardware.detect import GPUInfo, MachineInfo

__all__ = ["EnvVar", "Quirk", "QuirkContext", "env_recipe", "load_quirks", "match_quirks", "quirk"]


@dataclass(frozen=True)
class Quirk:
    id: str
    title: str
    severity: str  # "hard" | "soft" | "info"
    match: dict[str, Any]
    effect: dict[str, Any]
    remedy: str
    source: str

    def cite(self) -> str:
        return f"quirk {self.id}"

    @property
    def avoid_dtypes(self) -> tuple[str, ...]:
        return tuple(self.effect.get("avoid_dtypes", ()))

    @property
    def cpu_for_kinds(self) -> tuple[str, ...]:
        return tuple(self.effect.get("cpu_for_kinds", ()))

    @property
    def backend_unusable(self) -> bool:
        return bool(self.effect.get("backend_unusable"))


@dataclass
class QuirkContext:
    machine: MachineInfo
    gpu: GPUInfo | None = None
    backend: str | None = None
    component_kind: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    why: str
    quirk: str | None = None
    optional: bool = False  # export only when `why` says so
    gpu: int | None = None


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]


def _version_tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in str(v or "").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def load_quirks(path: str | None = None) -> tuple[Quirk, ...]:
    import yaml

    if path is None:
        text = resources.files("voxbox.hardware").joinpath("quirks.yaml").read_text()
    else:
        with open(path) as f:
            text = f.read()
    data = yaml.safe_load(text) or {}
    out = []
    for q in data.get("quirks", []):
        out.append(Quirk(id=q["id"], title=q["title"], severity=q.get("severity", "info"), match=q.get("match") or {},
                         effect=q.get("effect") or {}, remedy=" ".join(str(q.get("remedy", "")).split()),
                         source=" ".join(str(q.get("source", "")).split())))
    ids = [q.id for q in out]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate quirk ids in quirks.yaml")
    return tuple(out)


def quirk(quirk_id: str) -> Quirk:
    for q in load_quirks():
        if q.id == quirk_id:
            return q
    raise KeyError(quirk_id)


def _cond(key: str, want: Any, ctx: QuirkContext, partial: bool) -> bool:
    m, g = ctx.machine, ctx.gpu
    torch = m.backend("torch")
    ct2 = m.backend("ctranslate2")

    def check(value: Any, test: Any) -> bool:
        if value is None:
            return partial
        return test(value)

    if key == "vendor":
        return check(g.vendor if g else None, lambda v: v in _as_list(want))
    if key == "arch":
        return check(g.arch if g else None, lambda v: v in _as_list(want))
    if key == "arch_prefix":
        return check(g.arch if g else None, lambda v: any(str(v).startswith(p) for p in _as_list(want)))
    if key == "compute_capability":
        return check(g.compute_capability if g else None, lambda v: str(v) in [str(x) for x in _as_list(want)])
    if key == "unified_memory":
        return check(g.unified_memory if g else None, lambda v: bool(v) == bool(want))
    if key == "torch_build":
        return check(torch.build if torch.installed else None, lambda v: v in _as_list(want))
    if key == "backend":
        return check(ctx.backend, lambda v: v in _as_list(want))
    if key == "component_kind":
        return check(ctx.component_kind, lambda v: v in _as_list(want))
    if key == "dtype":
        return check(ctx.dtype, lambda v: v in _as_list(want))
    if key == "cuda_major_min":
        return check(m.cuda_major, lambda v: v >= int(want))
    if key == "ct2_version_below":
        return check(ct2.version if ct2.installed else None,
                     lambda v: _version_tuple(v) < _version_tuple(str(want)))
    if key == "ct2_libcublas12":
        return check(ct2.get("libcublas12") if ct2.installed else None, lambda v: bool(v) == bool(want))
    raise ValueError(f"unknown quirk match key {key!r}")


def matches(q: Quirk, ctx: QuirkContext, partial: bool = False) -> bool:
    return all(_cond(k, v, ctx, partial) for k, v in q.match.items())


def match_quirks(machine: MachineInfo, gpu: GPUInfo | None = None, *, backend: str | None = None,
                 component_kind: str | None = None, dtype: str | None = None, partial: bool = False,
                 quirks: Iterable[Quirk] | None = None) -> list[Quirk]:
    ctx = QuirkContext(machine, gpu, backend, component_kind, dtype)
    return [q for q in (quirks if quirks is not None else load_quirks()) if matches(q, ctx, partial)]


def machine_quirks(machine: MachineInfo) -> list[tuple[Quirk, GPUInfo | None]]:
    """Quirks that concern this machine (per GPU), whatever is later planned on it."""
    out: list[tuple[Quirk, GPUInfo | None]] = []
    seen: set[tuple[str, int | None]] = set()
    for g in machine.gpus or []:
        for q in match_quirks(machine, g, partial=True):
            if (q.id, g.index) not in seen:
                seen.add((q.id, g.index))
                out.append((q, g))
    return out


def env_recipe(machine: MachineInfo) -> list[EnvVar]:
    """Environment variables to export on this machine, each with why (from info quirks)."""
    out: list[EnvVar] = []
    names: set[str] = set()
    for q, g in machine_quirks(machine):
        if any(k in q.match for k in ("backend", "component_kind", "dtype")):
            continue  # option-level quirks add no environment
        pairs: list[tuple[str, str]] = [(k, str(v)) for k, v in (q.effect.get("env") or {}).items()]
        for name, by_arch in (q.effect.get("env_by_arch") or {}).items():
            if g is not None and g.arch in by_arch:
                pairs.append((name, str(by_arch[g.arch])))
        for name, value in pairs:
            if name in names:
                continue
            names.add(name)
            optional = bool(q.effect.get("env_optional"))
            why = q.remedy if not optional else f"only when {q.effect.get('env_when', 'needed')}: {q.remedy}"
            out.append(EnvVar(name, value, why=f"{q.title} ({q.cite()}). {why}", quirk=q.id, optional=optional,
                              gpu=g.index if g else None))
    return out
