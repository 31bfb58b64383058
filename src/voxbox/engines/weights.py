"""Reading safetensors checkpoints onto a GPU at the speed of the disk (or the page cache).

``safetensors``' ``safe_open(..., device="cuda")`` maps the file and copies tensor by tensor from
the mapping: every 4 KiB page is faulted in on the way, and each copy to the GPU starts from
pageable memory. For fish-s2's 9 GB of bf16 weights that read at about 1.2 GB/s on an H200 host
with the file already in the page cache (7.7 s of a 15 s start). :func:`read_tensors` reads the
same file with large sequential ``readinto`` calls into two pinned staging buffers, each copied to
the device asynchronously while the next one fills, so the read, not the mapping, sets the pace.

The format is the documented one (8-byte little-endian header length, a JSON header of
``dtype``/``shape``/``data_offsets`` per tensor, then the raw little-endian data). Anything this
reader does not know (a dtype it has no mapping for, a CPU target) goes through ``safe_open``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = ["read_tensors"]

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
STAGE_BYTES = 64 << 20  # per staging buffer (two of them)


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > 100 << 20:
            raise ValueError(f"{path.name}: safetensors header of {n} bytes")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def read_tensors(path: str | Path, device: torch.device | str, keep: Callable[[str], bool] | None = None, *,
                 staged: bool | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of a safetensors file (those ``keep`` accepts), each already
    on ``device`` in its stored dtype. ``staged`` (default: on CUDA) reads through the staging
    buffers; otherwise, or for a dtype this reader has no mapping for, ``safe_open`` reads it."""
    path = Path(path)
    dev = torch.device(device)
    header, base = _header(path)
    if staged is None:
        staged = dev.type == "cuda"
    if not staged or any(info["dtype"] not in _DTYPES for info in header.values()):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=str(dev)) as f:
            for name in f.keys():
                if keep is None or keep(name):
                    yield name, f.get_tensor(name)
        return
    yield from _staged(path, dev, header, base, keep)


def _staged(path: Path, dev: torch.device, header: dict, base: int,
            keep: Callable[[str], bool] | None) -> Iterator[tuple[str, torch.Tensor]]:
    cuda = dev.type == "cuda"
    stages = [torch.empty(STAGE_BYTES, dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    views = [memoryview(s.numpy().data) for s in stages]  # type: ignore[arg-type]
    done: list[torch.cuda.Event | None] = [None, None]
    stream = torch.cuda.Stream(device=dev) if cuda else None
    turn = 0
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    with open(path, "rb", buffering=0) as f:
        for name, info in items:
            if keep is not None and not keep(name):
                continue
            start, end = (int(x) for x in info["data_offsets"])
            out = torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]], device=dev)
            nbytes = end - start
            if nbytes != out.numel() * out.element_size():
                raise ValueError(f"{path.name}: {name} has {nbytes} bytes for shape {info['shape']}")
            flat = out.reshape(-1).view(torch.uint8)
            pos = 0
            while pos < nbytes:
                k = min(STAGE_BYTES, nbytes - pos)
                ev = done[turn]
                if ev is not None:
                    ev.synchronize()  # this buffer's previous copy has left it
                f.seek(base + start + pos)
                got = f.readinto(views[turn][:k])
                if got != k:
                    raise ValueError(f"{path.name}: truncated at {name} ({got} of {k} bytes)")
                if stream is not None:
                    with torch.cuda.stream(stream):
                        flat[pos:pos + k].copy_(stages[turn][:k], non_blocking=True)
                        ev = torch.cuda.Event()
                        ev.record(stream)
                    done[turn] = ev
                else:
                    flat[pos:pos + k].copy_(stages[turn][:k])
                turn ^= 1
                pos += k
            if stream is not None:  # work the caller queues on its stream waits for these copies
                torch.cuda.current_stream(dev).wait_stream(stream)
            yield name, out
    if stream is not None:
        stream.synchronize()
