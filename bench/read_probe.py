"""How fast a safetensors checkpoint reaches the GPU: ``safe_open(device=...)`` against
:func:`voxbox.engines.weights.read_tensors` with 1, 2, 4 and 8 reader threads.

Writes one checkpoint of ``--gb`` GB (bf16 tensors of fish-s2-like sizes), then reads it
``--runs`` times per reader, readers interleaved, each read both "cold" (the file's pages dropped
from the page cache first with ``posix_fadvise(DONTNEED)``, which needs no privileges: what a
first start after boot sees) and "warm" (pages cached: a second start). Reports GB/s as median
(min-max) per reader and case.

    python bench/read_probe.py --out $OUT/read --gb 4 --runs 3
    python bench/read_probe.py --out /tmp/r --gb 0.2 --runs 2 --device cpu   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def write_checkpoint(path: Path, gb: float) -> int:
    import torch
    from safetensors.torch import save_file

    rows = 4096
    per = rows * 2560 * 2  # one bf16 (4096, 2560) matrix: 20 MiB
    n = max(1, int(gb * 1e9 / per))
    base = torch.randn(rows, 2560).to(torch.bfloat16)
    tensors = {}
    for i in range(n):  # a big matrix and a small vector per layer, as a checkpoint has
        tensors[f"layers.{i}.w"] = base.clone()
        tensors[f"layers.{i}.norm"] = torch.ones(2560, dtype=torch.bfloat16)
    save_file(tensors, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return path.stat().st_size


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_once(path: Path, reader: str, device: str) -> float:
    import torch

    from voxbox.engines import weights

    t = time.perf_counter()
    if reader == "safe_open":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=device) as f:
            got = {k: f.get_tensor(k) for k in f.keys()}
    else:
        os.environ["VOXBOX_READ_THREADS"] = reader.split("-")[1]
        got = dict(weights.read_tensors(path, device, staged=True))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    del got
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--readers", default="safe_open,threads-1,threads-2,threads-4,threads-8")
    ap.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "model.safetensors"
        t = time.perf_counter()
        size = write_checkpoint(path, args.gb)
        written = time.perf_counter() - t
        times: dict[str, dict[str, list[float]]] = {r: {"cold": [], "warm": []} for r in readers}
        read_once(path, readers[-1], args.device)  # CUDA context, pinned pools, imports
        for _ in range(args.runs):
            for r in readers:
                drop_cache(path)
                times[r]["cold"].append(read_once(path, r, args.device))
                times[r]["warm"].append(read_once(path, r, args.device))
        gbps = {r: {case: {"median": round(size / 1e9 / statistics.median(v), 2),
                           "min": round(size / 1e9 / max(v), 2), "max": round(size / 1e9 / min(v), 2)}
                    for case, v in c.items()} for r, c in times.items()}
        report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "command": "python bench/read_probe.py " + " ".join(sys.argv[1:]), "bytes": size,
                  "write_s": round(written, 2), "cpus": os.cpu_count(), "gb_per_s": gbps,
                  "seconds": {r: {case: [round(x, 3) for x in v] for case, v in c.items()} for r, c in times.items()}}
    (out / "read_probe.json").write_text(json.dumps(report, indent=1))
    for r, c in gbps.items():
        print(f"{r:>10}  cold {c['cold']['median']:6.2f} GB/s ({c['cold']['min']}-{c['cold']['max']})"
              f"  warm {c['warm']['median']:6.2f} GB/s ({c['warm']['min']}-{c['warm']['max']})")


if __name__ == "__main__":
    main()
