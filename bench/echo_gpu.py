"""echo-tts (voxbox) vs upstream EchoTTS on one GPU: random weights at the real shapes, one run.

Run from the repository root with the echo-tts wheel importable (voxbox's own dependencies need
not be installed; torch, safetensors, einops, and torchaudio for the upstream side)::

    OUT=/tmp/out python bench/echo_gpu.py [--upstream-compile] [--skip-compile] [--runs 3]

1. Writes random weights at the real shapes (EchoDiT 2.8 B, Fish S1-DAC) in the upstream layout,
   as /work/shared/gpu/upstream_baselines.py does; both sides load these same files.
2. Upstream ``EchoTTS`` eager (``--upstream-compile`` adds ``compile=True``; its warm-up was 200 s),
   short/medium/long texts x 10/40 steps, warm-up then ``--runs`` runs; upstream always samples
   640 positions with 768 text tokens.
3. voxbox defaults (DiT bf16, block compiled + CUDA graphs; autoencoder fp32 through the fused
   Triton decoder walk); same texts and steps; total, time to first audio (TTFA), stages; the
   640-position override on every text; the autoencoder in bf16 (long text); the DiT without
   ``torch.compile`` (``compile=False``, long text, 10 steps); ``--decode``: the autoencoder
   alone (upstream TorchScript Snake vs the fused walk, one call vs streamed, fp32/bf16, kernel
   profile); a hybrid run (DiT on the GPU, autoencoder fp32 on the CPU) unless ``--skip-hybrid``.
Peak GPU memory per section. Writes ``$OUT/echo_gpu.json`` after every section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

TEXTS = {
    "short": "The quick brown fox jumps over the lazy dog near the river bank.",
    "medium": ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin "
               "nuzzled into his breast in an effort to escape the vile wind, slipped quickly through the glass doors."),
    "long": ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin "
             "nuzzled into his breast in an effort to escape the vile wind, slipped quickly through the glass doors "
             "of Victory Mansions, though not quickly enough to prevent a swirl of gritty dust from entering along "
             "with him. The hallway smelt of boiled cabbage and old rag mats. At one end of it a coloured poster, "
             "too large for indoor display, had been tacked to the wall. It depicted simply an enormous face, more "
             "than a metre wide: the face of a man of about forty-five."),
}
STEPS = (10, 40)
RES: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "texts": {k: len(v) for k, v in TEXTS.items()}}
OUT = Path(os.environ.get("OUT", "/tmp"))
T_START = time.time()


def save() -> None:
    RES["elapsed_s"] = round(time.time() - T_START, 1)
    (OUT / "echo_gpu.json").write_text(json.dumps(RES, indent=1))


def sync() -> None:
    torch.cuda.synchronize()


def stats(xs: list[float]) -> dict:
    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}


def peak_gb() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def upstream(root: Path, runs: int, compile_: bool) -> dict:
    from echo_tts import inference as I

    out: dict = {}
    t0 = time.time()
    tts = I.EchoTTS(device="cuda", dtype=torch.bfloat16, compile=compile_, model_path=str(root))
    sync()
    out["load_s"] = round(time.time() - t0, 2)
    for steps in STEPS:
        for name, text in TEXTS.items():
            t0 = time.time()
            tts.synthesize(text, num_steps=steps, preset="none")
            sync()
            first = time.time() - t0
            times = []
            for _ in range(runs):
                t0 = time.time()
                audio, _sr = tts.synthesize(text, num_steps=steps, preset="none")
                sync()
                times.append(time.time() - t0)
            out[f"{name}_steps{steps}"] = {"first_call_s": round(first, 2), "total_s": stats(times),
                                           "audio_s": round(audio.shape[-1] / 44100, 2)}
            print("upstream", "compiled" if compile_ else "eager", name, steps, out[f"{name}_steps{steps}"], flush=True)
    out["peak_gpu_gb"] = peak_gb()
    del tts
    return out


def run_voxbox(engine, text: str, runs: int, **opts) -> dict:
    totals, ttfas, stages, audio_s, details = [], [], [], 0.0, {}
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        stream = engine.stream(text, **opts)
        chunks = [next(stream)]
        ttfa = time.perf_counter() - t0
        chunks += list(stream)
        sync()
        totals.append(time.perf_counter() - t0)
        ttfas.append(ttfa)
        stages.append(stream.timings.as_dict())
        audio_s = sum(len(c.samples) for c in chunks) / 44100
        details = dict(stream.details, chunks=len(chunks))
    best = min(range(runs), key=lambda i: totals[i])
    synth = []  # non-streamed synthesize(): the whole latent decoded in one call
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        engine.synthesize(text, **opts)
        sync()
        synth.append(time.perf_counter() - t0)
    return {"total_s": stats(totals), "ttfa_s": stats(ttfas), "synthesize_s": stats(synth),
            "stages_s_of_best": {k: round(v, 4) for k, v in stages[best].items()}, "audio_s": round(audio_s, 2), **details}


def voxbox_section(root: Path, runs: int, label: str, texts=TEXTS, steps_list=STEPS, fixed640: bool = False,
                   warm_texts=None, **load_kw) -> dict:
    from voxbox.engines.tts import echo

    out: dict = {}
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    engine = echo.load(root, **load_kw)
    sync()
    out["load_s"] = round(time.time() - t0, 2)
    out["placement"] = engine.info.extra["placement"]
    out["warmup_s"] = round(engine.warmup(tuple(warm_texts or texts.values())), 2)
    if fixed640:
        out["warmup_640_s"] = round(engine.warmup(tuple(texts.values()), sequence_length=640), 2)
    for steps in steps_list:
        for name, text in texts.items():
            key = f"{name}_steps{steps}"
            out[key] = run_voxbox(engine, text, runs, steps=steps)
            print("voxbox", label, key, out[key], flush=True)
            if fixed640 and name != "long":
                out[key + "_seq640"] = run_voxbox(engine, text, runs, steps=steps, sequence_length=640)
                print("voxbox", label, key + "_seq640", out[key + "_seq640"], flush=True)
    out["peak_gpu_gb"] = peak_gb()
    engine.close()
    del engine
    torch.cuda.empty_cache()
    return out


def _time(fn, runs: int, warm: int = 3) -> dict:
    t0 = time.perf_counter()
    for _ in range(warm):
        fn()
    sync()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"s": stats(times), "warmup_s": round(warm_s, 2)}


def decode_bench(root: Path, runs: int, frames: int = 640, light: bool = False) -> dict:
    """The autoencoder alone on a random 640-frame latent: fp32 vs bf16; upstream's module forward
    (TorchScript / eager Snake) vs the fused walk (torch / Triton Snake); one call vs streamed
    chunks; cudnn.benchmark; a CUDA graph of the one-call walk; the top kernels of one decode."""
    import copy

    from voxbox.engines.tts import echo
    from voxbox.engines.tts.echo._codec import chunk_bounds, decode_chunks, run_decoder
    from voxbox.engines.tts.echo._load import set_snake

    engine = echo.load(root, device="cuda")
    ae32 = engine.ae
    ae16 = copy.deepcopy(ae32).to(torch.bfloat16)
    lat = torch.randn((1, frames, 80), device="cuda") * 0.8
    out: dict = {}
    plans = {"one_call": [(0, frames)], "streamed_16_128": chunk_bounds(frames, 16, 128),
             "streamed_16_256": chunk_bounds(frames, 16, 256), "streamed_16_640": chunk_bounds(frames, 16, 640)}
    ref = {}
    for dt_name, ae in (("fp32", ae32), ("bf16", ae16)):
        for mode in ("script", "triton") if light else ("script", "eager", "torch", "triton"):
            set_snake(ae, mode)
            for label, bounds in plans.items():
                if label != "one_call" and mode in ("script", "eager", "torch") and label != "streamed_16_128":
                    continue
                if light and label not in ("one_call", "streamed_16_128", "streamed_16_256"):
                    continue
                key = f"{dt_name}_{mode}_{label}"
                out[key] = _time(lambda: list(decode_chunks(ae, engine.pca, lat, bounds)), runs)
                if label == "one_call":
                    a = torch.cat(list(decode_chunks(ae, engine.pca, lat, bounds)))
                    ref.setdefault("fp32", a) if dt_name == "fp32" else None
                    out[key]["max_abs_vs_fp32_first"] = round(float((a - ref["fp32"]).abs().max()), 6)
                print("decode", key, out[key], flush=True)
    # cudnn.benchmark on the fused Triton walk
    torch.backends.cudnn.benchmark = True
    for dt_name, ae in () if light else (("fp32", ae32), ("bf16", ae16)):
        set_snake(ae, "triton")
        for label in ("one_call", "streamed_16_256"):
            key = f"{dt_name}_triton_{label}_cudnn_benchmark"
            out[key] = _time(lambda: list(decode_chunks(ae, engine.pca, lat, plans[label])), runs)
            print("decode", key, out[key], flush=True)
    torch.backends.cudnn.benchmark = False
    # decoder alone, one call, fused walk: eager launches vs a CUDA graph; channels-last is n/a for 1-d
    for dt_name, ae in (("fp32", ae32), ("bf16", ae16)):
        z = torch.randn((1, ae.decoder.model[0].conv.in_channels, frames * 4), device="cuda", dtype=next(ae.parameters()).dtype)
        with torch.inference_mode():
            out[f"{dt_name}_decoder_only_triton"] = _time(lambda: run_decoder(ae, z), runs)
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    run_decoder(ae, z)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    run_decoder(ae, z)
                out[f"{dt_name}_decoder_only_triton_graph"] = _time(g.replay, runs)
                del g
            except Exception as exc:
                out[f"{dt_name}_decoder_only_triton_graph"] = {"error": repr(exc)[:300]}
        print("decode", dt_name, out[f"{dt_name}_decoder_only_triton"], out[f"{dt_name}_decoder_only_triton_graph"], flush=True)
        try:
            from torch.profiler import ProfilerActivity, profile

            with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
                run_decoder(ae, z)
                sync()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70)
            out[f"{dt_name}_profile"] = table.splitlines()
            print(table, flush=True)
        except Exception as exc:
            out[f"{dt_name}_profile"] = repr(exc)[:300]
    engine.close()
    return out


def guarded(name: str, fn, *a, **kw) -> None:
    try:
        RES[name] = fn(*a, **kw)
    except Exception as exc:  # keep what the other sections measured
        traceback.print_exc()
        RES[name] = {"error": repr(exc)[:800]}
    torch.cuda.empty_cache()
    save()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--root", default="/tmp/echo")
    ap.add_argument("--upstream-compile", action="store_true")
    ap.add_argument("--skip-upstream", action="store_true")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip optional sections past this many seconds")
    ap.add_argument("--second", action="store_true", help="follow-up run: no upstream/hybrid; decode study; compiled DiT + compiled snake")
    ap.add_argument("--decode-only", action="store_true", help="only the autoencoder decode study")
    ap.add_argument("--decode", action="store_true", help="add a short decode study to the main run")
    ap.add_argument("--skip-hybrid", action="store_true")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # as upstream runs (cuDNN convs keep TF32, torch's default)
    root = Path(args.root)
    OUT.mkdir(parents=True, exist_ok=True)
    from voxbox.engines.tts.echo._random import write_random_model

    t0 = time.time()
    if not (root / "jordand" / "fish-s1-dac-min" / "pytorch_model.safetensors").exists():
        write_random_model(root, "real", device="cuda", hub_layout=True)
    RES["write_weights_s"] = round(time.time() - t0, 1)
    save()
    if args.decode_only:
        guarded("decode", decode_bench, root, args.runs)
        print(json.dumps(RES, indent=1))
        return
    if args.second:
        guarded("voxbox", voxbox_section, root, args.runs, "gpu", device="cuda")
        guarded("decode", decode_bench, root, args.runs)
        guarded("voxbox_compiled", voxbox_section, root, args.runs, "compiled", texts={"long": TEXTS["long"], "short": TEXTS["short"]},
                steps_list=(10, 40), device="cuda", compile=True, snake="compile")
        save()
        print(json.dumps(RES, indent=1))
        return
    if not args.skip_upstream:
        guarded("upstream_eager", upstream, root, args.runs, False)
        if args.upstream_compile:
            guarded("upstream_compiled", upstream, root, args.runs, True)
    guarded("voxbox", voxbox_section, root, args.runs, "gpu", fixed640=True, device="cuda")
    guarded("voxbox_ae_bf16", voxbox_section, root, args.runs, "ae-bf16", texts={"long": TEXTS["long"]}, device="cuda",
            placement={"autoencoder": "cuda:bfloat16"})
    if not args.skip_compile and time.time() - T_START < args.budget_s - 120:
        # the default compiles the DiT block on CUDA; this is the CUDA-graphs-only sampler (no Inductor)
        guarded("voxbox_no_compile", voxbox_section, root, args.runs, "no-compile", texts={"long": TEXTS["long"]},
                steps_list=(10,), device="cuda", compile=False)
    if args.decode:
        guarded("decode", decode_bench, root, args.runs, light=True)
    if not args.skip_hybrid and time.time() - T_START < args.budget_s - 60:
        guarded("voxbox_hybrid_ae_cpu", voxbox_section, root, 1, "hybrid", texts={"short": TEXTS["short"]},
                steps_list=(10,), warm_texts=("Hi.",), device="cuda", placement={"autoencoder": "cpu:float32"})
    RES["threads"] = torch.get_num_threads()
    save()
    print(json.dumps(RES, indent=1))


if __name__ == "__main__":
    main()
