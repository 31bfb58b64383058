"""kokoro vs kokoro-onnx and parakeet vs onnx-asr: same random real-shape weights, same machine, same run.

One command (from the repository root; builds the models once under ``--models``)::

    PYTHONPATH=src python bench/kokoro_parakeet.py --device cpu --threads 2 --runs 5
    PYTHONPATH=src python bench/kokoro_parakeet.py --device cuda --runs 5 --asr-batches 1,16,64,128,256

(GPU: ``pip install onnxruntime-gpu`` in place of ``onnxruntime``; torch with CUDA for voxbox's GPU
log-mel.) Models: :mod:`real_shapes` (Kokoro-82M's upstream modules with random weights, exported
as kokoro-onnx exports them; a FastConformer-TDT with Parakeet-TDT-0.6B-v2's shapes exported in
onnx-asr's layout).

TTS: a 6-sentence paragraph through ``KokoroEngine.synthesize`` and ``kokoro_onnx.Kokoro.create``
(each with its defaults; the peer gets a session with the same providers and thread count).
ASR: one clip at batch 1, then ``N`` clips at once for each ``--asr-batches`` value
(``ParakeetEngine.recognize`` vs onnx-asr's ``recognize([...])``), and one long file
(``transcribe`` with windows vs onnx-asr on the whole file). Runs alternate voxbox/peer order;
warm-up excluded; prints median (min-max) seconds, x realtime (audio seconds / wall seconds) and
voxbox's speed-up, and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

TEXT = ("The old lighthouse stood at the edge of the cliff, its lamp dark for many years. "
        "Every evening the keeper's daughter climbed the stairs and polished the glass anyway. "
        "She said that a light is only useful if someone keeps it ready. "
        "One stormy night a fishing boat lost its way among the rocks below. "
        "She lit the lamp with the last of the oil, and the sailors followed the beam home. "
        "Since then the village has never let the lighthouse go dark again.")


def providers(device: str) -> list[Any]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def stat(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def duel(name: str, audio_s: float, ours: Callable[[], Any], peer: Callable[[], Any], runs: int,
         sync: Callable[[], None]) -> dict[str, Any]:
    """Warm both once, then ``runs`` timed runs each, alternating which goes first."""
    for fn in (ours, peer):
        fn()
    times: dict[str, list[float]] = {"voxbox": [], "peer": []}
    for i in range(runs):
        order = [("voxbox", ours), ("peer", peer)] if i % 2 == 0 else [("peer", peer), ("voxbox", ours)]
        for who, fn in order:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[who].append(time.perf_counter() - t0)
    out = {"scenario": name, "audio_s": audio_s, "runs": runs}
    for who, xs in times.items():
        out[who] = stat(xs)
        out[who]["x_realtime"] = audio_s / out[who]["median"]
    out["speedup"] = out["peer"]["median"] / out["voxbox"]["median"]
    s = out
    print(f"{name:<34} audio {audio_s:7.1f}s  voxbox {s['voxbox']['median']:.3f}s ({s['voxbox']['min']:.3f}-"
          f"{s['voxbox']['max']:.3f}) {s['voxbox']['x_realtime']:8.1f}x  peer {s['peer']['median']:.3f}s "
          f"({s['peer']['min']:.3f}-{s['peer']['max']:.3f}) {s['peer']['x_realtime']:8.1f}x  "
          f"speed-up {s['speedup']:.2f}", flush=True)
    return out


def bench_tts(args: argparse.Namespace, sync: Callable[[], None]) -> list[dict[str, Any]]:
    import kokoro_onnx
    import onnxruntime as ort
    from real_shapes import make_kokoro

    from voxbox.engines.tts.kokoro import load

    d = make_kokoro(args.models / "kokoro")
    engine = load(str(d), device=args.device, threads=args.threads)
    sess = ort.InferenceSession(str(d / "kokoro-v1.0.onnx"), session_options(args.threads),
                                providers=providers(args.device))
    peer = kokoro_onnx.Kokoro.from_session(sess, str(d / "voices-v1.0.bin"))
    audio_s = engine.synthesize(TEXT, "af_heart").duration
    results = [duel("kokoro paragraph (6 sentences)", audio_s, lambda: engine.synthesize(TEXT, "af_heart"),
                    lambda: peer.create(TEXT, "af_heart"), args.runs, sync)]
    one = "She said that a light is only useful if someone keeps it ready."
    one_s = engine.synthesize(one, "af_heart").duration
    results.append(duel("kokoro one sentence", one_s, lambda: engine.synthesize(one, "af_heart"),
                        lambda: peer.create(one, "af_heart"), args.runs, sync))
    ttfa = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        stream = engine.stream(TEXT, "af_heart")
        next(stream)
        ttfa.append(time.perf_counter() - t0)
        stream.close()
    print(f"kokoro voxbox time to first audio (paragraph): {statistics.median(ttfa):.3f}s "
          f"({min(ttfa):.3f}-{max(ttfa):.3f})", flush=True)
    results.append({"scenario": "kokoro voxbox ttfa", "voxbox": stat(ttfa)})
    return results


def speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.1 * env * np.sin(2 * np.pi * (150 + 50 * np.sin(t)) * t) + rng.normal(0, 0.02, t.size)).astype(np.float32)


def bench_asr(args: argparse.Namespace, sync: Callable[[], None]) -> list[dict[str, Any]]:
    import onnx_asr
    from real_shapes import make_parakeet

    from voxbox.engines.asr.parakeet import load
    from voxbox.types import Audio

    d = make_parakeet(args.models / "parakeet", layers=args.layers)
    engine = load(str(d), device=args.device, threads=args.threads)
    peer = onnx_asr.load_model("nemo-conformer-tdt", str(d), sess_options=session_options(args.threads),
                               providers=providers(args.device))
    results = []
    for n in args.asr_batches:
        clips = [speechlike(args.clip, i) for i in range(n)]
        name = f"parakeet {n} x {args.clip:g}s clip(s)"
        batch = clips if n > 1 else clips[0]
        results.append(duel(name, n * args.clip, lambda c=clips: engine.recognize(c),
                            lambda b=batch: peer.recognize(b), args.runs, sync))
    if args.long:
        wave = speechlike(args.long, 99)
        audio = Audio(wave, 16000)
        results.append(duel(f"parakeet one {args.long:g}s file", args.long,
                            lambda: list(engine.transcribe(audio)[0]), lambda: peer.recognize(wave), args.runs, sync))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="tts,asr")
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("VOXBOX_BENCH_MODELS", "/tmp/voxbox-real-shapes")))
    ap.add_argument("--asr-batches", default="1,4", help="clips per batch, comma-separated")
    ap.add_argument("--clip", type=float, default=15.0, help="seconds per clip")
    ap.add_argument("--long", type=float, default=0.0, help="seconds of one long file (0 = skip)")
    ap.add_argument("--layers", type=int, default=24, help="conformer layers (24 = Parakeet-TDT-0.6B)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.asr_batches = [int(x) for x in args.asr_batches.split(",") if x]
    sync: Callable[[], None] = lambda: None
    import onnxruntime as ort

    meta = {"device": args.device, "threads": args.threads, "machine": platform.machine(), "cpus": os.cpu_count(),
            "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(sys.argv)}
    print(json.dumps(meta), flush=True)
    results: list[dict[str, Any]] = []
    if "tts" in args.only:
        results += bench_tts(args, sync)
    if "asr" in args.only:
        results += bench_asr(args, sync)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
