"""echo-tts on one GPU: whole call, first audio and stages over many runs, beside upstream in the
same process, then where the time goes (text encoder, sampler, decoder) with profiles.

Random weights at the real Echo-TTS shapes (``_random.write_random_model``), DiT bf16 compiled with
CUDA graphs (voxbox's defaults on an H200), autoencoder fp32 (the plan's default). For ``--runs``
rounds, in rotating order: voxbox ``synthesize`` (one-call decode), voxbox ``stream`` timed to its
first chunk and to its end, and upstream ``EchoTTS.synthesize`` (``--upstream eager`` and/or
``compiled``, the latter upstream's own ``compile=True``, about 200 s of warm-up). Then per part:

* the text encoder and the context keys/values (wall, GPU busy, kernel count);
* the sampler: GPU time and achieved TFLOP/s from the DiT's matmul and attention FLOPs;
* the decoder on the full latent: top kernels, and variants (cudnn.benchmark, TF32 matmuls,
  bf16 weights), each with its error against the default decode.

    python bench/echo_probe.py --out $OUT [--runs 10] [--steps 10] [--upstream eager,compiled]

Writes ``echo_probe.json`` and ``echo_profiles.txt`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _text(name: str) -> str:
    import yaml

    doc = yaml.safe_load((HERE.parent / "src/voxbox/bench/scenarios.yaml").read_text())
    return " ".join(str(doc["tts"]["texts"][name]).split())


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"median_ms": round(float(np.median(a)), 2), "min_ms": round(float(a.min()), 2),
            "max_ms": round(float(a.max()), 2), "n": len(xs)}


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _profile(fn: Callable[[], Any], out: Path, name: str, rows: int = 25) -> dict[str, Any]:
    """One call of fn under the torch profiler: wall, GPU busy (kernels only), kernel count, top table."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    with open(out / "echo_profiles.txt", "a") as f:
        f.write(f"===== {name}\n" + events.table(sort_by="self_cuda_time_total", row_limit=rows,
                                                   max_name_column_width=80) + "\n")
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]
    return {"wall_ms": round(wall * 1000, 2),
            "gpu_busy_ms": round(sum(e.self_device_time_total for e in kernels) / 1000, 2),
            "kernels": sum(e.count for e in kernels),
            "top": [{"name": e.key[:90], "ms": round(e.self_device_time_total / 1000, 3), "count": e.count}
                    for e in top]}


def _dit_flops(runner: Any, seq: int, ltot: int, batch: int) -> float:
    """Matmul + attention FLOPs of one DiT forward at this batch (the per-layer fused weights)."""
    per_tok = sum(w.numel() for lay in runner.layers for w in (lay[0], lay[1], lay[3], lay[4]))
    attn = 4 * seq * ltot * runner.model_size * runner.num_layers
    return batch * (2.0 * seq * per_tok + attn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--text", default="long")
    ap.add_argument("--upstream", default="eager", help="comma list of eager, compiled; or none")
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--voice-seconds", type=float, default=0.0,
                    help="also stream with a cloned voice of this many seconds: the speaker keys/values kept "
                         "per voice (the engine's default) against computed every call")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (a smoke run on the CPU)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    sys.path.insert(0, str(HERE.parent / "src"))
    from voxbox.bench.peers.upstream_tts import import_with_stand_ins
    from voxbox.engines.tts import echo
    from voxbox.engines.tts.echo._codec import decode_chunks
    from voxbox.engines.tts.echo._dit import euler_schedule, padded_len
    from voxbox.engines.tts.echo._engine import MAX_TEXT_TOKENS, SPEAKER_BUCKET, TEXT_BUCKET
    from voxbox.engines.tts.echo._random import write_random_model

    text = _text(args.text)
    res: dict[str, Any] = {"command": "python bench/echo_probe.py " + " ".join(sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                           "text_chars": len(text), "steps": args.steps}
    opts = {"steps": args.steps, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_random_model(Path(tmp) / "echo", "tiny" if args.tiny else "real", device=args.device,
                                  hub_layout=True)
        t0 = time.perf_counter()
        engine = echo.load(root, device=args.device)
        res["load_s"] = round(time.perf_counter() - t0, 2)
        res["info"] = engine.info.extra
        t0 = time.perf_counter()
        engine.warmup((text,), steps=args.steps)
        res["warmup_s"] = round(time.perf_counter() - t0, 2)

        contenders: dict[str, Callable[[], dict[str, float]]] = {}

        def vb_synth() -> dict[str, float]:  # engine.synthesize: the stream with a one-call decode
            t0 = time.perf_counter()
            stream = engine.stream(text, chunk_frames=640, **opts)
            stream.collect()
            got = {"total": time.perf_counter() - t0}
            got.update({f"stage.{k}": v for k, v in stream.timings.as_dict().items()})
            return got

        def vb_stream(voice: Any = None) -> dict[str, float]:
            t0 = time.perf_counter()
            stream = engine.stream(text, voice=voice, **opts)
            got: dict[str, float] = {}
            for _ in stream:
                if "first" not in got:
                    got["first"] = time.perf_counter() - t0
                    got.update({f"first.{k}": v for k, v in stream.timings.as_dict().items()})
            got["total"] = time.perf_counter() - t0
            got.update({f"end.{k}": v for k, v in stream.timings.as_dict().items()})
            return got

        def vb_synth_eager_decode() -> dict[str, float]:  # the one-call decode without its CUDA graph
            graphs = engine.decode_graphs
            was, graphs.enabled = graphs.enabled, False
            try:
                return vb_synth()
            finally:
                graphs.enabled = was

        contenders["voxbox_synthesize"] = vb_synth
        contenders["voxbox_stream"] = vb_stream
        if engine.decode_graphs.enabled:
            contenders["voxbox_synthesize_eager_decode"] = vb_synth_eager_decode
        if args.voice_seconds > 0:
            from voxbox.types import Audio

            rng = np.random.default_rng(7)
            clip = Audio((0.1 * rng.standard_normal(int(44100 * args.voice_seconds))).astype(np.float32), 44100)
            voice = engine.encode_voice(clip)  # the latent is cached in both cases

            def vb_voice(keep: bool) -> dict[str, float]:
                if not keep:
                    engine._speaker_kv.clear()  # what every call did before the per-voice cache
                return vb_stream(voice)

            for keep in (True, False):
                vb_voice(keep)  # the voice's speaker bucket: its graphs are captured here
                contenders["voxbox_stream_voice" + ("" if keep else "_speaker_kv_every_call")] = (
                    lambda keep=keep: vb_voice(keep))
        ups = [u for u in args.upstream.split(",") if u and u != "none"]
        if ups:
            inference = import_with_stand_ins("echo_tts.inference", ("torchaudio",), {})
        for u in ups:
            t0 = time.perf_counter()
            dt = torch.bfloat16 if args.device == "cuda" else torch.float32
            tts = inference.EchoTTS(device=args.device, dtype=dt, compile=u == "compiled", model_path=str(root))

            def up_run(tts: Any = tts) -> dict[str, float]:
                t0 = time.perf_counter()
                tts.synthesize(text, num_steps=args.steps, preset="none", seed=0)
                sync()
                return {"total": time.perf_counter() - t0}

            up_run()
            up_run()
            res[f"upstream_{u}_load_and_warmup_s"] = round(time.perf_counter() - t0, 1)
            contenders[f"upstream_{u}"] = up_run
        samples: dict[str, dict[str, list[float]]] = {k: {} for k in contenders}
        names = list(contenders)
        for r in range(args.runs):
            for name in names[r % len(names):] + names[: r % len(names)]:
                for k, v in contenders[name]().items():
                    samples[name].setdefault(k, []).append(v)
        res["runs"] = {n: {k: _stats(v) for k, v in d.items()} for n, d in samples.items()}
        base = np.median(samples["voxbox_synthesize"]["total"])
        res["ratio_vs_voxbox_synthesize"] = {n: round(float(np.median(d["total"]) / base), 3)
                                             for n, d in samples.items()}
        print(json.dumps(res, indent=1), flush=True)

        # ---- where the time goes ------------------------------------------------------------
        call = engine._parse(text, None, None, opts)
        dit = engine.dit
        tlen = min(padded_len(len(call.tokens), TEXT_BUCKET, TEXT_BUCKET), MAX_TEXT_TOKENS)
        shp = dit.shape(call.seq, tlen, SPEAKER_BUCKET)
        ts = euler_schedule(call.params.steps)[:-1]
        guided = sum(call.params.cfg_min_t <= t <= call.params.cfg_max_t for t in ts)
        flops = (guided * _dit_flops(dit, call.seq, shp.ltot, 3)
                 + (len(ts) - guided) * _dit_flops(dit, call.seq, shp.ltot, 1))
        sample_s = float(np.median(samples["voxbox_synthesize"]["stage.sample"]))

        class _T:
            def measure(self, _name: str) -> Any:
                import contextlib

                return contextlib.nullcontext()

        lat_holder: list[torch.Tensor] = []
        parts: dict[str, Any] = {}
        parts["latent_all"] = _profile(lambda: lat_holder.append(engine._latent(call, _T())), out, "latent")
        parts["sample"] = {"tflop": round(flops / 1e12, 2), "median_ms": round(sample_s * 1000, 2),
                           "tflops_per_s": round(flops / sample_s / 1e12, 1), "ltot": shp.ltot, "seq": call.seq,
                           "guided_steps": guided}
        latent = lat_holder[0]

        def text_only() -> None:
            n = len(call.tokens)
            tlen = shp.text_len  # the bucket the call uses
            ids = torch.zeros((1, tlen), dtype=torch.int32)
            ids[0, :n] = torch.tensor(call.tokens, dtype=torch.int32)
            mask = torch.zeros((1, tlen), dtype=torch.bool)
            mask[0, :n] = True
            with torch.inference_mode():
                state = engine.text_norm(engine.text_encoder(ids.to(args.device), mask.to(args.device)))
                dit.context_kv(state.to(dtype=dit.dtype), dit.w_ctx_text)

        text_only()
        t = []
        for _ in range(args.runs):
            sync()
            t0 = time.perf_counter()
            text_only()
            sync()
            t.append(time.perf_counter() - t0)
        parts["text_encode"] = {**_stats(t), **_profile(text_only, out, "text")}
        frames = latent.shape[1]

        def decode_full(ae: Any = engine.ae) -> torch.Tensor:
            return next(decode_chunks(ae, engine.pca, latent, [(0, frames)]))

        ref = decode_full()

        def timed(fn: Callable[[], torch.Tensor]) -> tuple[dict[str, float], torch.Tensor]:
            y = fn()
            ts = []
            for _ in range(args.runs):
                sync()
                t0 = time.perf_counter()
                y = fn()
                ts.append(time.perf_counter() - t0)
            return _stats(ts), y

        def err(y: torch.Tensor) -> float:
            return round(float((y - ref).norm() / ref.norm().clamp_min(1e-12)), 6)

        dec: dict[str, Any] = {"frames": frames, "audio_s": round(ref.numel() / 44100, 2)}
        st, _ = timed(decode_full)
        dec["default"] = {**st, **_profile(decode_full, out, "decode")}
        first = next(decode_chunks(engine.ae, engine.pca, latent, [(0, engine.chunk_frames)]))
        st, _ = timed(lambda: next(decode_chunks(engine.ae, engine.pca, latent, [(0, engine.chunk_frames)])))
        dec["first_chunk"] = {**st, "frames": engine.chunk_frames, "samples": int(first.numel())}
        if engine.decode_graphs.enabled:  # the whole latent through its padded CUDA graph, as synthesize runs it
            def decode_graph() -> torch.Tensor:
                return next(decode_chunks(engine.ae, engine.pca, latent, [(0, frames)], engine.decode_graphs))

            st, y = timed(decode_graph)
            dec["graph"] = {**st, "rel_err": err(y), **_profile(decode_graph, out, "decode_graph")}
        if not args.no_variants:
            torch.backends.cudnn.benchmark = True
            st, y = timed(decode_full)
            dec["cudnn_benchmark"] = {**st, "rel_err": err(y)}
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = True
            st, y = timed(decode_full)
            dec["tf32_matmul"] = {**st, "rel_err": err(y)}
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            st, y = timed(decode_full)
            dec["no_tf32_conv"] = {**st, "rel_err": err(y)}
            torch.backends.cudnn.allow_tf32 = True
            ae16 = copy.deepcopy(engine.ae).to(torch.bfloat16)
            st, y = timed(lambda: decode_full(ae16))
            dec["bf16"] = {**st, "rel_err": err(y), **_profile(lambda: decode_full(ae16), out, "decode_bf16")}
            del ae16
        parts["decode"] = dec
        res["parts"] = parts
        print(json.dumps(parts, indent=1), flush=True)
    (out / "echo_probe.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
