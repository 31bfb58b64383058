"""Where torch-whisper's batched admission spends its time, in one process on a GPU (large-v3 shape).

The server bench (``bench/batch_gpu.py``) showed admissions (encoder pass over the joining windows,
prompt prefill, first token) taking 14 ms per window at c=64, while the offline ``batch_size=64``
path's whole window (encoder and 100 decoder steps) costs about 17 ms. This script times the
pieces with CUDA events, no server, so the two can be told apart:

- the encoder alone at batch 1 / 8 / 16 / 32 / 64 (eager, and ``torch.compile``'d when asked);
- ``WindowBatcher.admit`` over 8 / 32 / 64 windows, split into the encoder pass and the prefill
  (the batcher's own ``encode_gpu_s`` / ``prefill_gpu_s``);
- a batched decoder step at 64 occupied slots against the offline decoder's step at batch 64;
- a ``torch.profiler`` table of one 32-window admission and of one 64-row step.

    python bench/tw_admit_profile.py --out $OUT [--compile-encoder]

Median of ``--runs`` timed runs after 2 warm-up runs, with min and max. Writes
``tw_admit_profile.json`` and ``tw_admit_profile_*.txt`` (profiler tables) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def _timed(fn: Any, runs: int) -> dict[str, float]:
    """GPU milliseconds of ``fn()`` (CUDA events around it), ``runs`` times after two warm-ups."""
    import torch

    out = []
    if not torch.cuda.is_available():  # CPU smoke run: wall clock
        for i in range(runs + 2):
            t = time.perf_counter()
            fn()
            if i >= 2:
                out.append(1000 * (time.perf_counter() - t))
        return _stats(out)
    for i in range(runs + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        b.synchronize()
        if i >= 2:
            out.append(a.elapsed_time(b))
    return _stats(out)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", default="large-v3")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile-encoder", action="store_true", help="also time torch.compile'd encoder passes")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from voxbox.bench.shapes.whisper import write_whisper
    from voxbox.engines.asr.torch_whisper.batcher import WindowRequest
    from voxbox.engines.registry import load_engine

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    res: dict[str, Any] = {"shape": args.shape, "torch": torch.__version__, "gpu": gpu,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": args.runs}
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    path = write_whisper(tmp / "tw", args.shape, device=args.device)
    engine = load_engine("torch-whisper", str(path), device=args.device, max_new_tokens=100, without_timestamps=True)
    res["load_s"] = round(time.perf_counter() - t0, 1)
    runner, model = engine.runner, engine.runner.model
    n_mels = model.dims.n_mels
    mels = torch.randn(64, n_mels, 3000, device=args.device) * 0.5
    opts = engine.defaults
    prompt = engine._prompt("en", "transcribe", opts, [])
    rules = engine._rules(opts)

    with torch.inference_mode():
        res["encoder_ms"] = {b: _timed(lambda b=b: runner.encode(mels[:b]), args.runs) for b in (1, 8, 16, 32, 64)}
        for b, v in res["encoder_ms"].items():
            v["per_window"] = round(v["median"] / b, 2)
        print("encoder", json.dumps(res["encoder_ms"]), flush=True)

        # the offline decoder at batch 64: 100 steps (graphs captured on the first call)
        enc64 = runner.encode(mels)
        res["offline_decode_64_ms"] = _timed(lambda: runner.decode(enc64, prompt, rules, 100), max(3, args.runs // 2))
        res["offline_ms_per_step"] = round(res["offline_decode_64_ms"]["median"] / 100, 3)
        print("offline decode", res["offline_decode_64_ms"], flush=True)

    batcher = engine.batcher(SimpleNamespace(max_batch=64))

    def admit(n: int) -> list[Any]:
        return batcher.admit([WindowRequest(list(prompt), rules, 100, mel=mels[i]) for i in range(n)])

    def drop(handles: list[Any]) -> None:
        for h in handles:
            batcher.drop(h)

    res["admit"] = {}
    for n in (8, 32, 64):
        walls, enc_s, pre_s = [], [], []
        for i in range(args.runs + 2):
            _sync()
            e0, p0 = batcher.encode_gpu_s, batcher.prefill_gpu_s
            t = time.perf_counter()
            hs = admit(n)
            _sync()
            wall = time.perf_counter() - t
            batcher.stats()  # harvests the events
            if i >= 2:
                walls.append(wall * 1000)
                enc_s.append((batcher.encode_gpu_s - e0) * 1000)
                pre_s.append((batcher.prefill_gpu_s - p0) * 1000)
            drop(hs)
        res["admit"][n] = {"wall_ms": _stats(walls), "encode_gpu_ms": _stats(enc_s), "prefill_gpu_ms": _stats(pre_s)}
        print("admit", n, res["admit"][n], flush=True)

    # batched steps at 64 occupied slots: admit 64, step to the end (graphs captured on the first round)
    per_step = []
    for i in range(3):
        hs = admit(64)
        _sync()
        steps0, t = batcher.steps, time.perf_counter()
        done = 0
        while done < 64:
            done += sum(1 for _, _, fin in batcher.step() if fin)
        _sync()
        if i:
            per_step.append(1000 * (time.perf_counter() - t) / max(1, batcher.steps - steps0))
        drop(hs)
    res["batched_ms_per_step_64"] = _stats(per_step)
    print("batched step", res["batched_ms_per_step_64"], flush=True)

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    with profile(activities=acts) as prof:
        hs = admit(32)
        _sync()
    (args.out / "tw_admit_profile_admit32.txt").write_text(
        prof.key_averages().table(sort_by=sort, row_limit=30))
    drop(hs)
    hs = admit(64)
    for _ in range(3):
        batcher.step()
    _sync()
    with profile(activities=acts) as prof:
        for _ in range(4):
            batcher.step()
        _sync()
    (args.out / "tw_admit_profile_step64.txt").write_text(
        prof.key_averages().table(sort_by=sort, row_limit=30))
    drop(hs)

    if args.compile_encoder:
        with torch.inference_mode():
            enc_c = torch.compile(model.encoder, dynamic=False)
            res["compiled_encoder_ms"] = {}
            for b in (8, 32, 64):
                t = time.perf_counter()
                enc_c(mels[:b].to(runner.dtype))
                _sync()
                first = time.perf_counter() - t
                v = _timed(lambda b=b: enc_c(mels[:b].to(runner.dtype)), args.runs)
                v["per_window"] = round(v["median"] / b, 2)
                v["first_call_s"] = round(first, 1)
                res["compiled_encoder_ms"][b] = v
                print("compiled encoder", b, v, flush=True)

    res["batcher_stats"] = batcher.stats()
    (args.out / "tw_admit_profile.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
