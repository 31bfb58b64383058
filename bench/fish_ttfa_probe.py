"""Where fish-s2's first audio goes under concurrency, in one process (no server, no HTTP).

The engine (random weights at the S2-Pro shape, as ``bench/batch_gpu.py`` serves it) with the
runtime's batch scheduler attached; ``c`` threads each stream one utterance in a cloned voice
(a 10-s reference, encoded once), all released together, for ``--rounds`` rounds. Per request:
the time to its first chunk, and the engine's stages up to then (``batch_wait``: submitted to
admitted; ``prefill``: the admission call; the rest is decoder steps and the first window's
codec call) from the stream's timings. Printed per level as median / p95 / max; the same
without the scheduler (one at a time, the engine's own loop) at c=1::

    python bench/fish_ttfa_probe.py --out $OUT [--levels 1,16] [--frames 128]

Writes ``fish_ttfa_probe.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the steps "
        "as he went.")


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"median": round(float(np.median(a)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(a.max()), 1)}


def one(engine: Any, voice: Any, frames: int, gate: threading.Barrier | None) -> dict[str, Any]:
    if gate is not None:
        gate.wait()
    t0 = time.perf_counter()
    stream = engine.stream(TEXT, voice=voice, max_frames=frames, logit_bias={engine.cfg.eos_token_id: -1e4})
    first = None
    stages_at_first: dict[str, float] = {}
    for _ in stream:
        if first is None:
            first = time.perf_counter() - t0
            stages_at_first = dict(stream.timings.as_dict())
    return {"ttfa": first, "total": time.perf_counter() - t0, "at_first": stages_at_first}


def level(engine: Any, voice: Any, c: int, rounds: int, frames: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for _ in range(rounds):
        gate = threading.Barrier(c)
        out: list[Any] = [None] * c

        def go(i: int, gate: threading.Barrier = gate, out: list[Any] = out) -> None:
            out[i] = one(engine, voice, frames, gate)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows += out
    res: dict[str, Any] = {"ttfa_ms": _pct([r["ttfa"] for r in rows]), "total_ms": _pct([r["total"] for r in rows])}
    for k in sorted({k for r in rows for k in r["at_first"]}):
        res[f"{k}_at_first_ms"] = _pct([r["at_first"].get(k, 0.0) for r in rows])
    return res


def profile_admissions(engine: Any, voice: Any, sched: Any, sizes: list[int], frames: int, out: Path,
                       device: str) -> dict[str, Any]:
    """One round per size in ``sizes``, its largest admission under the torch profiler (the
    batcher's ``admit`` wrapped for the round): wall time, GPU busy time, and the top ops by GPU
    and by CPU time in ``fish_admit_profile_<rows>.txt``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    batcher = sched.batcher
    original = batcher.admit
    found: dict[str, Any] = {}
    for c in sizes:
        seen: list[Any] = []

        def admit(requests: list[Any], c: int = c, seen: list[Any] = seen) -> Any:
            if seen or len(requests) < max(1, c // 2):
                return original(requests)
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                handles = original(requests)
                wall = time.perf_counter() - t0
            seen.append((len(requests), wall, prof))
            return handles

        batcher.admit = admit
        try:
            level(engine, voice, c, 1, frames)
        finally:
            batcher.admit = original
        if not seen:
            continue
        rows, wall, prof = seen[0]
        ev = prof.key_averages()
        # kernels only (an op's self device time repeats its kernels': summing both counts twice)
        gpu_us = sum(e.self_device_time_total for e in ev if e.device_type == DeviceType.CUDA)
        found[f"rows{rows}"] = {"wall_ms": round(wall * 1000, 2), "gpu_busy_ms": round(gpu_us / 1000, 2),
                                "kernels": sum(e.count for e in ev if e.device_type == DeviceType.CUDA)}
        text = (ev.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60) + "\n\n"
                + ev.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
        (out / f"fish_admit_profile_{rows}.txt").write_text(text)
        print(f"admission of {rows} rows: {found[f'rows{rows}']}", flush=True)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--levels", default="1,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--profile-admit", action="store_true",
                    help="after the levels: one admission of 1 and of max(levels) rows under the torch profiler")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from voxbox.bench.shapes.fish import write_fish_dir
    from voxbox.engines.tts import fish_s2
    from voxbox.runtime.batching import BatchConfig, Scheduler
    from voxbox.types import Audio

    levels = [int(x) for x in args.levels.split(",")]
    res: dict[str, Any] = {"command": "python bench/fish_ttfa_probe.py " + " ".join(__import__("sys").argv[1:]),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        d = write_fish_dir(Path(tmp) / "fish", tiny=args.tiny)
        engine = fish_s2.load(d, device=args.device, weights="random", max_context=512 if args.tiny else 1024,
                              max_frames=args.frames)
        rng = np.random.default_rng(0)
        ref = Audio((0.1 * rng.standard_normal(441000 if not args.tiny else 2205)).astype(np.float32), 44100)
        voice = engine.encode_voice(ref, "This is the reference speech.")
        one(engine, voice, args.frames, None)  # warm-up
        res["unbatched_c1"] = level(engine, voice, 1, args.rounds, args.frames)
        print("unbatched c=1", res["unbatched_c1"], flush=True)
        cfg = BatchConfig(max_batch=max(levels), window_ms=5.0)
        sched: Scheduler = Scheduler(engine.batcher(cfg), cfg, name="fish")
        engine.use_scheduler(sched)
        t0 = time.perf_counter()
        while sched.warming and time.perf_counter() - t0 < 300:  # the idle-time warm-up, before any timing
            time.sleep(0.05)
        res["idle_warm"] = {"seconds": round(time.perf_counter() - t0, 2), **{
            k: v for k, v in sched.batcher.stats().items() if k in ("warm_graphs", "warm_s", "graphs", "codec_graphs")}}
        print("idle warm-up", res["idle_warm"], flush=True)
        try:
            for c in levels:  # warm-up: graphs of every batch size
                level(engine, voice, c, 1, args.frames)
            for c in levels:
                res[f"batched_c{c}"] = level(engine, voice, c, args.rounds, args.frames)
                print(f"batched c={c}", res[f"batched_c{c}"], flush=True)
            if args.profile_admit:
                res["admit_profiles"] = profile_admissions(engine, voice, sched, sorted({1, max(levels)}), args.frames,
                                                           out, args.device)
        finally:
            engine.use_scheduler(None)
            sched.close()
    (out / "fish_ttfa_probe.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
