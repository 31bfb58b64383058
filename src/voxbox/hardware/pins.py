"""Pins: what the user fixed (``--device``, ``--dtype``, per-component settings) and how the
planner honours them (kept even against a quirk or a probe, with a warning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voxbox.hardware.detect import MachineInfo
from voxbox.hardware.memory import MemoryBudget, bytes_for
from voxbox.hardware.options import Option
from voxbox.hardware.probe import BAD_STATUSES
from voxbox.types import ComponentSpec

if TYPE_CHECKING:
    from voxbox.hardware.planner import Placement

__all__ = ["component_pin", "pinned_placement", "pins_from"]


def pins_from(device: str | None = None, dtype: str | None = None,
              components: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pins from CLI flags (``--device``, ``--dtype``) and per-component settings
    (``{"autoencoder": "cpu"}`` or ``{"dit": {"device": "cuda", "dtype": "float16"}}``); "auto" means unpinned."""
    pins: dict[str, Any] = {}
    if device not in (None, "", "auto"):
        pins["device"] = device
    if dtype not in (None, "", "auto"):
        pins["dtype"] = dtype
    if components:
        pins["components"] = {k: ({"device": v} if isinstance(v, str) else dict(v)) for k, v in components.items()}
    return pins


def component_pin(pins: Mapping[str, Any] | None, component: str) -> tuple[str | None, str | None]:
    """(device, dtype) pinned for ``component`` (its own setting over the global flags); None: free."""
    if not pins:
        return None, None
    dev, dt = pins.get("device"), pins.get("dtype")
    comp = (pins.get("components") or {}).get(component) or {}
    if isinstance(comp, str):
        comp = {"device": comp}
    dev = comp.get("device", dev)
    dt = comp.get("dtype", dt)
    return (None if dev in (None, "auto") else dev), (None if dt in (None, "auto") else dt)


def _pin_matches(opt: Option, dev: str | None, dt: str | None) -> bool:
    if dt is not None and opt.dtype != dt:
        return False
    if dev is None:
        return True
    kind, _, idx = dev.partition(":")
    if kind == "cpu":
        return opt.gpu is None
    if opt.gpu is None:
        return False
    if kind in ("cuda", "rocm", "gpu", "hip"):
        return (not idx or int(idx) == opt.gpu.index) and (kind in ("cuda", "gpu", "hip") or opt.gpu.vendor == "amd")
    return False


def pinned_placement(label: str, spec: ComponentSpec, machine: MachineInfo, opts: list[Option], dev: str | None,
                     dt: str | None, budget: MemoryBudget, warnings: list[str]) -> Placement:
    """The placement a pin asks for; a contradicted quirk or probe becomes a warning, not a refusal."""
    from voxbox.hardware.planner import Placement

    cands = sorted((o for o in opts if _pin_matches(o, dev, dt)), key=lambda o: o.excluded is not None)
    o = cands[0] if cands else None
    if o is not None:
        device, dtype = o.device, o.dtype
    else:
        device = dev or "cpu"
        dtype = dt or (spec.dtypes[0] if spec.dtypes else "float32")
        if dev is not None and dev.split(":")[0] != "cpu" and not machine.gpus:
            warnings.append(f"{label}: {spec.name} pinned to {dev}, but this machine has no GPU.")
    need = bytes_for(spec, dtype)
    what = "/".join(x for x in (dev, dt) if x)
    reason = f"{spec.name} on {device} in {dtype}: pinned ({what})"
    cites: list[str] = []
    if o is not None and o.excluded:
        reason += f", although {o.excluded}"
        cites = list(o.quirks)
        warnings.append(f"{label}: the pin {what} for {spec.name} contradicts the plan: {o.excluded}.")
    if o is not None and o.probe is not None and o.probe.status in BAD_STATUSES and "probe" not in (o.excluded or ""):
        warnings.append(f"{label}: the pin {what} for {spec.name} contradicts a probe: {o.probe.summary()}.")
    budget.take(device, need)
    g = o.gpu if o is not None else None
    return Placement(spec.name, device, dtype, reason + ".", backend=spec.backend,
                     device_kind="cpu" if device == "cpu" else (g.kind if g else device.split(":")[0]),
                     gpu=g.index if g else None, bytes=need, quirks=cites, pinned=True,
                     probe=None if o is None or o.probe is None else o.probe.summary())
