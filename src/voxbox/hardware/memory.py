"""Memory arithmetic for the planner: what a component needs at a dtype, what a device can give."""

from __future__ import annotations

from voxbox.hardware.detect import GiB, MachineInfo
from voxbox.types import ComponentSpec

__all__ = ["BYTES_PER_ELEMENT", "MemoryBudget", "batch_slots", "bytes_for", "headroom"]

BYTES_PER_ELEMENT: dict[str, float] = {
    "float64": 8, "float32": 4, "int8_float32": 1, "float16": 2, "bfloat16": 2, "int8_float16": 1,
    "int8_bfloat16": 1, "int8": 1, "int16": 2, "int4": 0.5, "q8_0": 1, "q5_1": 0.75, "q5_0": 0.7,
    "q4_0": 0.6, "default": 4, "auto": 4,
}


def bytes_for(spec: ComponentSpec, dtype: str) -> int:
    """Memory a component needs at ``dtype``: params x bytes per element + overhead."""
    return int(spec.params * BYTES_PER_ELEMENT.get(dtype, 4) + spec.overhead_bytes)


def headroom(total: int) -> int:
    """Memory left untouched on a device: 10% of it, at least 1 GiB (0.5 GiB on small devices)."""
    floor = GiB if total >= 8 * GiB else GiB // 2
    return max(floor, int(total * 0.10))


def batch_slots(per_slot: int, free: int, total: int, *, cap: int, share: float = 0.5) -> int:
    """Sequences a loaded model may batch on a device: ``share`` of the memory free beyond the
    headroom, divided by what one sequence needs (its KV cache, its latents), at most ``cap``
    and at least 1. The other part stays for activations, graphs and other models."""
    room = int((free - headroom(total)) * share)
    return max(1, min(int(cap), room // max(1, int(per_slot))))


class MemoryBudget:
    """Free memory per device (torch device string, or "cpu") minus headroom; unified GPUs draw on
    host RAM too, so what they take is taken from the CPU's share as well."""

    def __init__(self, machine: MachineInfo) -> None:
        self.machine = machine
        self.free: dict[str, int] = {"cpu": machine.ram_available - headroom(machine.ram_total)}
        for g in machine.gpus:
            free = g.free_memory if g.free_memory is not None else int(g.total_memory * 0.9)
            self.free[g.torch_device] = free - headroom(g.total_memory)

    def left(self, device: str) -> int:
        return max(self.free.get(device, 0), 0)

    def fits(self, device: str, n: int) -> bool:
        return n <= self.free.get(device, 0)

    def take(self, device: str, n: int) -> None:
        self.free[device] = self.free.get(device, 0) - n
        g = next((g for g in self.machine.gpus if g.torch_device == device), None)
        if g is not None and g.unified_memory:
            self.free["cpu"] -= n
