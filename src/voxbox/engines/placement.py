"""Per-component (device, dtype) for multi-component torch engines (echo-tts, fish-s2).

One rule set, three sources, in this order:

1. ``device="auto"`` with no ``dtype``: the hardware planner decides per component
   (:func:`voxbox.hardware.plan.auto_placement` — detection, cached probe verdicts, quirks such as
   "bf16 hangs gfx1151" or "conv decoders hang MIOpen", free memory). Its one-sentence reasons are
   returned so the engine can report them.
2. An explicit ``device`` (and optional ``dtype`` for the transformers): every component on that
   device; on a GPU transformers default to bfloat16 and conv-heavy components (codec,
   autoencoder) to float32; on the CPU everything is float32.
3. ``placement`` pins single components: ``"cuda:float16"``, ``"cpu"``, ``(device, dtype)`` or
   ``{"device": ..., "dtype": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from voxbox.errors import BadInputError

__all__ = ["DTYPES", "Placement", "resolve_placement", "torch_device", "torch_dtype"]

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
          "float32": "float32", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class Placement:
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    reason: str

    def __iter__(self):  # unpacks as (device, dtype)
        return iter((self.device, self.dtype))


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
        return tuple((list(spec) + [None])[:2])  # type: ignore[return-value]
    head, _, tail = str(spec).rpartition(":")
    if head and tail.lower() in DTYPES:
        return head, tail
    return str(spec), None


def resolve_placement(engine: str, components: tuple[str, ...], *, conv: frozenset[str] | set[str],
                      device: Any = "auto", dtype: Any = None, placement: Mapping[str, Any] | None = None,
                      follows: Mapping[str, str] | None = None,
                      specs: Any = None) -> dict[str, Placement]:
    """(device, dtype, reason) per component; see the module docstring for the rules.

    ``conv``: components that default to float32 on a GPU. ``follows``: components the planner
    does not know by name that take another's placement (e.g. echo's speaker encoder follows its
    text encoder). ``specs``: the engine's ComponentSpecs for the planner (default: the planner's
    reference list for ``engine``).
    """
    follows = dict(follows or {})
    out: dict[str, Placement] = {}
    if device in (None, "", "auto") and dtype is None:
        from voxbox.hardware.plan import auto_placement

        plan = auto_placement(engine, list(specs) if specs else None)
        planned = {p.component: p for p in plan.placements}
        for comp in components:
            p = planned.get(follows.get(comp, comp))
            if p is None:  # not in the planner's reference list: the biggest component's choice
                p = plan.main
            dev = torch_device(p.device or "cpu")
            # CPU float16/bfloat16 kernels are slow or missing for convs: keep the planner's word
            # for GPUs only.
            dt = p.dtype if dev.type != "cpu" else "float32"
            out[comp] = Placement(dev, torch_dtype(dt or "float32"), p.reason)
    else:
        base = torch_device(device)
        for comp in components:
            if base.type == "cpu":
                dt = dtype if (dtype and comp not in conv) else "float32"
            else:
                dt = "float32" if comp in conv else (dtype or "bfloat16")
            out[comp] = Placement(base, torch_dtype(dt), f"{comp} on {base} in {dt}: device {device!r} was requested.")
    for comp, spec in (placement or {}).items():
        if comp not in components:
            raise BadInputError(f"unknown {engine} component {comp!r}; components: {', '.join(components)}",
                                param="placement")
        dev_name, dt_name = _parse_pin(spec)
        dev = torch_device(dev_name) if dev_name else out[comp].device
        default = "float32" if (dev.type == "cpu" or comp in conv) else "bfloat16"
        dt = dt_name or default
        out[comp] = Placement(dev, torch_dtype(dt), f"{comp} on {dev} in {dt}: pinned by the caller.")
    return out
