"""``voxbox batch transcribe`` throughput in-process vs on Ray Data, same files, same run.

Each run is the real command (``python -m voxbox.cli batch transcribe ...``) into a fresh output
file; the two modes alternate run by run, and the wall time of the whole command is measured
(model loads and, for Ray, actor start-up included: that is what a user waits for). Throughput is
audio hours per hour (= x realtime) of the files that succeeded; min / median / max over the runs.
Ray joins a local cluster this script starts once (``ray start --head``, like tests/ray) with
``--ray-cpus`` CPUs and ``--ray-gpus`` GPUs, so cluster start-up is not counted.

CPU (2 cores)::

    python bench/ray_batch.py run --files 12 --runs 3 --ray-cpus 2 --actors 2 --actor-cpus 0.75

One H200, torch-whisper at the large-v3 shape with random weights (every window decodes
``max_new_tokens`` tokens; timing does not depend on weight values)::

    python bench/ray_batch.py make-model --out /tmp/lv3                      # ~3 GB, once
    python bench/ray_batch.py run --engine torch-whisper --model /tmp/lv3 --device cuda \\
        --files 64 --runs 3 --ray-cpus 8 --ray-gpus 1 --actors 1 --actor-gpus 1 --batch-size 4 \\
        --option max_new_tokens=100 --option temperature=0 --language en --out-json $OUT/ray_batch_h200.json

(``temperature=0``: no fallback re-decodes, so every window costs the same on random weights.)

The corpus is the human recordings of the moonshine-voice wheel (0.9 s to 44 s), copied round-robin
to ``--files`` files (copies cost the same decode and engine work as distinct files).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ray"))
RECORDINGS = ["beckett.wav", "clone-test.wav", "endgame_nagg_nell.wav", "two_cities.wav", "success.wav", "error.wav"]


def corpus(folder: Path, n: int) -> Path:
    import moonshine_voice

    assets = Path(moonshine_voice.__file__).parent / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = RECORDINGS[i % len(RECORDINGS)]
        shutil.copy(assets / name, folder / f"{i:04d}-{name}")
    return folder


def one_run(cmd: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    audio = sum(r["duration"] or 0.0 for r in rows if r["error"] is None)
    return {"wall_s": round(wall, 2), "audio_s": round(audio, 2), "files": len(rows),
            "failed": sum(1 for r in rows if r["error"] is not None), "x_realtime": round(audio / wall, 2),
            "summary": proc.stderr.strip().splitlines()[-1]}


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(args: argparse.Namespace) -> None:
    from ray_harness import LocalCluster, ray_env

    work = Path(args.work)
    files = corpus(work / "corpus", args.files)
    base = [sys.executable, "-m", "voxbox.cli", "batch", "transcribe", str(files)]
    for flag in ("engine", "model", "device", "language", "batch_size", "threads"):
        v = getattr(args, flag)
        if v is not None:
            base += [f"--{flag.replace('_', '-')}", str(v)]
    for opt in args.option or []:
        base += ["--option", opt]
    if args.no_vad:
        base.append("--no-vad")
    ray_flags = ["--actors", str(args.actors)] if args.actors else []
    ray_flags += ["--actor-cpus", str(args.actor_cpus)] if args.actor_cpus else []
    ray_flags += ["--actor-gpus", str(args.actor_gpus)] if args.actor_gpus is not None else []
    cluster = LocalCluster(cpus=args.ray_cpus, object_store_mb=args.object_store_mb, gpus=args.ray_gpus)
    results: dict[str, list[dict[str, Any]]] = {"in-process": [], "ray": []}
    try:
        cluster.connect()
        env = ray_env() | {k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        for i in range(args.runs):
            for mode in ("in-process", "ray"):
                cmd = base + (["--address", cluster.address] + ray_flags if mode == "ray" else [])
                r = one_run(cmd, work / f"{mode}.jsonl", env)
                results[mode].append(r)
                print(f"run {i + 1} {mode}: {r['x_realtime']}x realtime ({r['audio_s']} s of audio in {r['wall_s']} s)",
                      file=sys.stderr)
    finally:
        cluster.stop()
    report: dict[str, Any] = {"command": base, "ray_flags": ray_flags, "ray_cpus": args.ray_cpus,
                              "ray_gpus": args.ray_gpus, "runs": results}
    for mode, rows in results.items():
        report[mode] = {"x_realtime": stats([r["x_realtime"] for r in rows]),
                        "wall_s": stats([r["wall_s"] for r in rows])}
    ip, ry = report["in-process"]["x_realtime"]["median"], report["ray"]["x_realtime"]["median"]
    report["ray_vs_in_process"] = round(ry / ip, 3)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out_json:
        Path(args.out_json).write_text(text + "\n")


def make_model(args: argparse.Namespace) -> None:
    """A random Whisper checkpoint at the large-v3 shape in the HF layout torch-whisper loads (the
    bench shapes' writer: end-of-text suppressed, so every window decodes ``max_new_tokens``)."""
    import torch

    from voxbox.bench.shapes.whisper import write_whisper

    out = write_whisper(Path(args.out), "large-v3", device="cuda" if torch.cuda.is_available() else "cpu")
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", default="/tmp/voxbox-ray-batch")
    r.add_argument("--files", type=int, default=12)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--engine"), r.add_argument("--model"), r.add_argument("--device"), r.add_argument("--language")
    r.add_argument("--batch-size", type=int), r.add_argument("--threads", type=int)
    r.add_argument("--option", action="append")
    r.add_argument("--no-vad", action="store_true", help="decode whole files (batch transcribe's --no-vad)")
    r.add_argument("--ray-cpus", type=int, default=2), r.add_argument("--ray-gpus", type=int, default=0)
    r.add_argument("--object-store-mb", type=int, default=500)
    r.add_argument("--actors", type=int), r.add_argument("--actor-cpus", type=float)
    r.add_argument("--actor-gpus", type=float)
    r.add_argument("--out-json")
    m = sub.add_parser("make-model")
    m.add_argument("--out", required=True)
    args = ap.parse_args()
    (run if args.cmd == "run" else make_model)(args)


if __name__ == "__main__":
    main()
