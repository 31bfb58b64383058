"""fish-s2's first audio for a new voice: the reference's encoding, then the stream's first chunk.

The engine (random weights at the S2-Pro shape, as ``bench/fish_ttfa_probe.py`` loads it) is
warmed up with one voice; then, for each of ``--voices`` references of ``--seconds`` that it has
never seen (noise at a fresh seed, so none is cached): ``encode_voice`` (its codes come back to
the host, so the time is complete) and one stream in that voice, timed to its first chunk. The
same stream in an already cached voice gives the cached-voice first audio of the same run. Then
the encoder alone, on the same clips, per variant (``cudnn.benchmark``; bf16 autocast, with the
share of codes equal to fp32's), and one encode under the torch profiler (top kernels by GPU
time, and the encode's wall time against its GPU busy time)::

    python bench/fish_voice_probe.py --out $OUT [--voices 10] [--seconds 10]

Writes ``fish_voice_probe.json`` (and ``fish_voice_profile.txt``) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TEXT = "The old lighthouse keeper climbed the spiral stairs every evening."


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"median_ms": round(float(np.median(a)), 2), "min_ms": round(float(a.min()), 2),
            "max_ms": round(float(a.max()), 2), "n": len(xs)}


def _first_chunk(engine: Any, voice: Any, frames: int) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    stream = engine.stream(TEXT, voice=voice, max_frames=frames, logit_bias={engine.cfg.eos_token_id: -1e4})
    first, stages = 0.0, {}
    for _ in stream:
        if not first:
            first = time.perf_counter() - t0
            stages = dict(stream.timings.as_dict())
    return first, stages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--voices", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from voxbox.bench.shapes.fish import write_fish_dir
    from voxbox.engines.tts import fish_s2
    from voxbox.types import Audio

    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    res: dict[str, Any] = {"command": "python bench/fish_voice_probe.py " + " ".join(sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name() if cuda else None}
    with tempfile.TemporaryDirectory() as tmp:
        d = write_fish_dir(Path(tmp) / "fish", tiny=args.tiny)
        engine = fish_s2.load(d, device=args.device, weights="random", max_context=512 if args.tiny else 1024,
                              max_frames=args.frames)
        rate = engine.codec.sample_rate
        n = int(args.seconds * rate) if not args.tiny else 2205

        def clip(seed: int) -> Audio:
            rng = np.random.default_rng(seed)
            return Audio((0.1 * rng.standard_normal(n)).astype(np.float32), rate)

        t0 = time.perf_counter()
        cached = engine.encode_voice(clip(0), "This is the reference speech.")
        res["first_encode_in_process_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        _first_chunk(engine, cached, args.frames)  # warm-up: graphs, the first prefix
        _first_chunk(engine, cached, args.frames)

        enc_s, after_s, cached_s = [], [], []
        stages: dict[str, dict[str, list[float]]] = {"new": {}, "cached": {}}
        for i in range(args.voices):
            c = clip(1000 + i)
            t0 = time.perf_counter()
            v = engine.encode_voice(c, "This is the reference speech.")
            enc_s.append(time.perf_counter() - t0)
            ttfa, st = _first_chunk(engine, v, args.frames)  # new prefix: prefilled, then cached
            after_s.append(ttfa)
            for k, x in st.items():
                stages["new"].setdefault(k, []).append(x)
            ttfa, st = _first_chunk(engine, cached, args.frames)
            cached_s.append(ttfa)
            for k, x in st.items():
                stages["cached"].setdefault(k, []).append(x)
        res["new_voice"] = {"encode": _stats(enc_s), "first_chunk_after_encode": _stats(after_s),
                            "first_audio": _stats([a + b for a, b in zip(enc_s, after_s, strict=True)])}
        res["cached_voice_first_audio"] = _stats(cached_s)
        res["stages_at_first_chunk"] = {w: {k: _stats(x) for k, x in st.items()} for w, st in stages.items()}
        print(json.dumps(res, indent=1), flush=True)

        codec = engine.codec
        clips = [torch.from_numpy(clip(2000 + i).samples) for i in range(args.voices)]

        def encode_all(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[list[float], list[torch.Tensor]]:
            fn(clips[0])  # this variant's first call (cudnn.benchmark tunes here)
            ts, codes = [], []
            for x in clips:
                sync()
                t0 = time.perf_counter()
                y = fn(x).cpu()
                ts.append(time.perf_counter() - t0)
                codes.append(y)
            return ts, codes

        variants: dict[str, Any] = {}
        base_t, base_codes = encode_all(codec.encode)
        variants["default"] = _stats(base_t)
        if cuda:
            torch.backends.cudnn.benchmark = True
            t, _ = encode_all(codec.encode)
            variants["cudnn_benchmark"] = _stats(t)
            torch.backends.cudnn.benchmark = False

            def bf16(x: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return codec.encode(x)

            t, codes = encode_all(bf16)
            same = [float((a == b).float().mean()) for a, b in zip(base_codes, codes, strict=True)]
            variants["bf16_autocast"] = {**_stats(t), "codes_equal_share": round(float(np.mean(same)), 4)}
        res["encode_variants"] = variants
        print(json.dumps(variants, indent=1), flush=True)

        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        sync()
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            codec.encode(clips[1]).cpu()
            wall = time.perf_counter() - t0
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70)
        (out / "fish_voice_profile.txt").write_text(table)
        events = prof.key_averages()
        # kernels only (an op's self device time repeats its kernels': summing both counts twice)
        gpu_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
        res["profile"] = {"wall_ms": round(wall * 1000, 2), "gpu_busy_ms": round(gpu_us / 1000, 2),
                          "kernels": sum(e.count for e in events if e.device_type == DeviceType.CUDA)}
        print(res["profile"], flush=True)
    (out / "fish_voice_probe.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
