"""Warm-up of the GPU engines: process start to measured speed, first start against second start.

For each engine (random weights at the published shapes, written once by this script) a fresh
process is started ``--starts`` times in a row with the same, initially empty, voxbox cache dir
(``VOXBOX_CACHE_DIR``; ``TORCHINDUCTOR_CACHE_DIR``/``TRITON_CACHE_DIR`` unset, so voxbox's
persistent compile cache in ``<cache>/compile`` is what torch uses). Start 1 compiles every kernel;
start 2 should load them from disk. Each process: import, load, warm-up (the engine's own
``warmup()`` where it has one, else one call), then ``--runs`` measured calls. Reported per start:
seconds from process start to the end of warm-up (``ready_s``: what a user waits before full speed),
its parts, the first measured call and the median (min-max) of the measured calls, so one sees
that the speed after warm-up is the steady speed. With ``--no-cache`` a third row per engine runs
with ``VOXBOX_COMPILE_CACHE=0`` and a fresh torch cache dir (torch's own default behaviour on a
fresh machine or container).

    python bench/warmup_gpu.py --out $OUT                         # torch-whisper, echo-tts, fish-s2
    python bench/warmup_gpu.py --out /tmp/w --engines torch-whisper --tiny --device cpu   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

ECHO_TEXT = "The old lighthouse keeper climbed the spiral stairs every evening, counting each step as he went."
FISH_TEXT = "The old lighthouse keeper climbed the spiral stairs every evening."


def write_models(root: Path, engines: list[str], tiny: bool, device: str) -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(SRC))
    out: dict[str, dict[str, Any]] = {}
    if "torch-whisper" in engines:
        from voxbox.bench.shapes.whisper import write_whisper

        d = write_whisper(root / "tw", "tiny" if tiny else "large-v3", device=device)
        out["torch-whisper"] = {"path": str(d), "load": {"max_new_tokens": 100, "without_timestamps": True}}
    if "echo-tts" in engines:
        from voxbox.engines.tts.echo._random import write_random_model

        d = write_random_model(root / "echo", "tiny" if tiny else "real", device=device)
        out["echo-tts"] = {"path": str(d), "load": {}}
    if "fish-s2" in engines:
        from voxbox.bench.shapes.fish import write_fish_checkpoint

        # random weights saved as a bf16 checkpoint: each start reads it as it would a real S2-Pro
        d = write_fish_checkpoint(root / "fish", device=device, tiny=tiny)
        out["fish-s2"] = {"path": str(d), "load": {"weights": "checkpoint", "max_context": 512 if tiny else 1024,
                                                   "max_frames": 64}}
    return out


def child(args: argparse.Namespace) -> None:
    """One process: import, load, warm up, measure; prints one JSON line (times from ``--t0``)."""
    t_import = time.time()
    sys.path.insert(0, str(SRC))
    from voxbox.engines.compile_cache import persist_bytecode_cache

    dont_write = sys.dont_write_bytecode
    bytecode = persist_bytecode_cache()  # as the CLI does first thing (a no-op where torch has bytecode)
    import numpy as np
    import torch

    torch_imported = time.time()
    from voxbox.engines.registry import load_engine
    from voxbox.types import Audio

    imported = time.time()
    load = json.loads(args.load)
    prof_load = None
    if args.cprofile:
        import cProfile

        prof_load = cProfile.Profile()
        prof_load.enable()
    engine: Any = load_engine(args.engine, args.model, device=args.device, **load)
    loaded = time.time()

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    if args.engine == "torch-whisper":
        audio = Audio((0.1 * np.random.default_rng(1).standard_normal(16000 * 30)).astype(np.float32), 16000)

        def call() -> None:
            segs, _ = engine.transcribe(audio, language="en", options={"temperature": (0.0,)})
            list(segs)
    elif args.engine == "echo-tts":
        stages: dict[str, list[float]] = {}

        def call() -> None:
            stream = engine.stream(ECHO_TEXT, preset="fast", chunk_frames=640)
            stream.collect()
            for k, v in stream.timings.as_dict().items():
                stages.setdefault(k, []).append(v)
    else:
        def call() -> None:
            engine.synthesize(FISH_TEXT)

    if args.engine == "echo-tts":
        engine.warmup(texts=(ECHO_TEXT,), preset="fast")
    elif args.engine == "fish-s2":
        engine.warmup()
    call()  # every engine: one call of the measured shape (the first compile of torch-whisper's step)
    sync()
    ready = time.time()
    extra: dict[str, Any] = {"torch_import_s": round(torch_imported - t_import, 3), "bytecode_prefix": bytecode,
                             "dont_write_bytecode_at_start": dont_write}
    if prof_load is not None:
        import io
        import pstats

        prof_load.disable()
        buf = io.StringIO()
        pstats.Stats(prof_load, stream=buf).sort_stats("cumulative").print_stats(45)
        extra["cprofile_load_and_warmup"] = buf.getvalue().splitlines()[-60:]
        buf = io.StringIO()
        pstats.Stats(prof_load, stream=buf).sort_stats("cumulative").print_stats("voxbox|echo_tts", 40)
        extra["cprofile_voxbox"] = buf.getvalue().splitlines()[-45:]
    runs = []
    for _ in range(args.runs):
        t = time.perf_counter()
        call()
        sync()
        runs.append(time.perf_counter() - t)
    stats = getattr(engine, "stats", None)
    import psutil

    me = psutil.Process()
    extra["load_stages_s"] = getattr(getattr(engine, "info", None), "extra", {}).get("load_stages_s")
    extra["child_processes_at_ready"] = len(me.children(recursive=True))
    extra["cpu_busy_children_at_ready"] = round(sum(c.cpu_percent(0.2) for c in me.children(recursive=True)), 1)
    if args.settle:
        time.sleep(args.settle)  # the same calls again once the process has been idle a while
        later = []
        for _ in range(args.runs):
            t = time.perf_counter()
            call()
            sync()
            later.append(time.perf_counter() - t)
        extra["after_settle_s"] = {"settle_s": args.settle, "median": round(statistics.median(later), 4),
                                   "min": round(min(later), 4), "max": round(max(later), 4)}
        extra["child_processes_after_settle"] = len(me.children(recursive=True))
    if args.engine == "echo-tts":
        extra["stages_median_s"] = {k: round(statistics.median(v[-len(runs):]), 4) for k, v in stages.items()}
        extra["compile_options"] = dict(__import__("voxbox.engines.tts.echo._dit", fromlist=["x"]).COMPILE_OPTIONS)
    if args.profile and torch.cuda.is_available():
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
            sync()
        kern = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
        extra["profile"] = {
            "kernels": sum(e.count for e in kern),
            "gpu_busy_ms": round(sum(e.self_device_time_total for e in kern) / 1000, 2),
            "graph_launches": sum(e.count for e in prof.key_averages() if "cudaGraphLaunch" in e.key),
            "top": [(e.key[:80], round(e.self_device_time_total / 1000, 3), e.count)
                    for e in sorted(kern, key=lambda e: -e.self_device_time_total)[:15]]}
    print("RESULT " + json.dumps({**extra,
        "python_start_s": round(t_import - args.t0, 3), "import_s": round(imported - t_import, 3),
        "load_s": round(loaded - imported, 3), "warmup_s": round(ready - loaded, 3),
        "ready_s": round(ready - args.t0, 3), "first_measured_s": round(runs[0], 4),
        "measured_s": {"median": round(statistics.median(runs), 4), "min": round(min(runs), 4),
                       "max": round(max(runs), 4), "runs": len(runs)},
        "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "engine_stats": stats() if callable(stats) else None,
    }, default=str), flush=True)
    engine.close()


def start(engine: str, model: dict[str, Any], cache: Path, *, device: str, runs: int, persist: bool,
          log: Any, flags: tuple[str, ...] = (), more_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env.update(more_env or {})
    env["VOXBOX_CACHE_DIR"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    if not persist:  # torch's defaults, in a fresh directory (a new machine or container)
        env["VOXBOX_COMPILE_CACHE"] = "0"
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "torch-default")
        env["TRITON_CACHE_DIR"] = str(cache / "triton-default")
    t0 = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--engine", engine, "--model", model["path"],
           "--load", json.dumps(model["load"]), "--device", device, "--runs", str(runs), "--t0", repr(t0), *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    log.write(f"===== {engine} (persist={persist}) =====\n{proc.stderr[-6000:]}\n")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": f"exit {proc.returncode}: {proc.stderr[-800:]}"}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median (min-max) of ready/import/load/warm-up seconds over the second and later starts, and
    over the starts with the bytecode cache off."""
    groups = {"later_starts": [r for r in rows if isinstance(r.get("start"), int) and r["start"] >= 2],
              "bytecode_cache_off": [r for r in rows if r.get("bytecode_cache") is False]}
    out: dict[str, Any] = {}
    for g, rs in groups.items():
        rs = [r for r in rs if "error" not in r]
        if rs:
            out[g] = {k: {"median": round(statistics.median(r[k] for r in rs), 3), "min": min(r[k] for r in rs),
                          "max": max(r[k] for r in rs), "n": len(rs)}
                      for k in ("ready_s", "import_s", "load_s", "warmup_s")}
            out[g]["measured_median_s"] = round(statistics.median(r["measured_s"]["median"] for r in rs), 4)
    first = next((r for r in rows if r.get("start") == 1 and "error" not in r), None)
    if first:
        out["first_start_ready_s"] = first["ready_s"]
        out["first_start_measured_median_s"] = first["measured_s"]["median"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    c.add_argument("--engine"), c.add_argument("--model"), c.add_argument("--load"), c.add_argument("--device")
    c.add_argument("--runs", type=int), c.add_argument("--t0", type=float)
    for a in (c, ap):
        a.add_argument("--profile", action="store_true", help="profile one call after the runs (kernels, GPU busy)")
        a.add_argument("--cprofile", action="store_true", help="cProfile of load + warm-up (top 45, cumulative)")
        a.add_argument("--settle", type=float, default=0.0,
                       help="after the runs, wait this long and measure again (what lingers after warm-up)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--engines", default="torch-whisper,echo-tts,fish-s2")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-cache", action="store_true", help="also a start with torch's default cache (fresh dir)")
    ap.add_argument("--bytecode-ab", type=int, default=0, metavar="N",
                    help="then N starts with VOXBOX_BYTECODE_CACHE=0 (compile cache warm)")
    args = ap.parse_args()
    if args.cmd == "child":
        child(args)
        return
    if not args.out:
        ap.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    flags = ("--profile",) if args.profile else ()
    flags += ("--cprofile",) if args.cprofile else ()
    flags += ("--settle", str(args.settle)) if args.settle else ()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "command": "python bench/warmup_gpu.py " + " ".join(sys.argv[1:]), "engines": {}}
    with tempfile.TemporaryDirectory() as tmp, open(out / "warmup.log", "w") as log:
        root = Path(tmp)
        models = write_models(root, engines, args.tiny, args.device)
        for name in engines:
            rows: list[dict[str, Any]] = []
            cache = root / f"cache-{name}"
            for i in range(args.starts):
                r = start(name, models[name], cache, device=args.device, runs=args.runs, persist=True, log=log,
                          flags=flags)
                r["start"] = i + 1
                rows.append(r)
                report["engines"][name] = rows
                (out / "warmup.json").write_text(json.dumps(report, indent=1))  # what a cut-short run had
                print(name, "start", i + 1, {k: r.get(k) for k in ("ready_s", "load_s", "warmup_s", "measured_s",
                                                                   "error")}, flush=True)
            for _ in range(args.bytecode_ab):
                r = start(name, models[name], cache, device=args.device, runs=args.runs, persist=True, log=log,
                          flags=flags, more_env={"VOXBOX_BYTECODE_CACHE": "0"})
                r["start"], r["bytecode_cache"] = "again, VOXBOX_BYTECODE_CACHE=0", False
                rows.append(r)
                print(name, "bytecode cache off", {k: r.get(k) for k in ("ready_s", "load_s", "warmup_s", "error")},
                      flush=True)
            report.setdefault("summary", {})[name] = summarize(rows)
            if args.no_cache:
                r = start(name, models[name], root / f"nocache-{name}", device=args.device, runs=args.runs,
                          persist=False, log=log, flags=flags)
                r["start"] = "no persistent cache, fresh torch cache dir"
                rows.append(r)
                print(name, "no-cache", {k: r.get(k) for k in ("ready_s", "warmup_s", "error")}, flush=True)
            report["engines"][name] = rows
            (out / "warmup.json").write_text(json.dumps(report, indent=1))
    (out / "warmup.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
