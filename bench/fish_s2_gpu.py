"""Fish S2-Pro (``fish-s2``) on a GPU: random weights at the published S2-Pro shapes, fixed frame count.

Timing does not depend on weight values once the number of frames is forced (``min_frames`` =
``max_frames``), so this measures the real decode path: upstream-shaped ``config.json`` ->
``load(weights="random")`` -> CUDA-graph capture -> a cached reference voice -> a streamed call
of a ~545-character text. Reported (JSON under ``--out``): ms per frame, RTF, first-audio latency,
codec share of the wall time, achieved weight bandwidth (GB/s), peak GPU memory, per-graph times.

    python bench/fish_s2_gpu.py --out $OUT [--frames 800] [--runs 3] [--codec-dtype float32]
    python bench/fish_s2_gpu.py --tiny --device cpu --out /tmp/x   # CPU smoke test of the script

The tokenizer is a word-level stand-in (about one token per word, like the real BPE on English);
the slow model's vocabulary size, token layout and every weight shape are S2-Pro's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one hundred "
    "and twelve steps as his father had taught him. At the top, he wiped the salt from the great lens, "
    "lit the lamp, and watched its beam sweep across the restless water. Ships he would never meet "
    "passed safely in the dark, their captains trusting a light they could not see the source of. "
    "Some nights the fog rolled in so thick that he sounded the horn until dawn, and in the morning "
    "he wrote in his log, as always: the light was kept, and no one was lost."
)


def build_dir(root: Path, tiny: bool) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from voxbox.engines.tts.fish_s2.config import S2_PRO_CONFIG, CodecConfig, CodecTransformerConfig

    sample = TEXT + " Hello. This is the reference speech."
    words = sorted({w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(sample)})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    n_sem = 64 if tiny else 4096
    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<|voice|>", "<|speaker:0|>"]
    tok.add_special_tokens(specials + [f"<|semantic:{i}|>" for i in range(n_sem)])
    tok.save(str(root / "tokenizer.json"))
    cfg = json.loads(json.dumps(S2_PRO_CONFIG))
    cfg.update(eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=tok.token_to_id("<|pad|>"),
               audio_pad_token_id=None, semantic_start_token_id=tok.token_to_id("<|semantic:0|>"),
               semantic_end_token_id=tok.token_to_id(f"<|semantic:{n_sem - 1}|>"))
    if tiny:
        cfg["text_config"].update(vocab_size=tok.get_vocab_size() + 8, n_layer=2, dim=64, n_head=4, n_local_heads=2,
                                  head_dim=16, intermediate_size=128)
        cfg["audio_decoder_config"].update(vocab_size=n_sem, n_layer=2, dim=64, text_dim=64, n_head=4,
                                           n_local_heads=2, head_dim=16, intermediate_size=128)
        codec = CodecConfig(encoder_dim=16, encoder_rates=(2, 4), decoder_dim=32, decoder_rates=(4, 2),
                            encoder_transformer_layers=(0, 1), n_codebooks=9, codebook_size=16, codebook_dim=4,
                            semantic_codebook_size=n_sem, downsample_factor=(2,),
                            quantizer_transformer=CodecTransformerConfig(n_layer=1, n_head=2, dim=128,
                                                                         intermediate_size=96, head_dim=32))
        (root / "codec_config.json").write_text(json.dumps(codec.to_dict()))
    (root / "config.json").write_text(json.dumps(cfg, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=800, help="forced frame count (800 = 37.2 s at 21.5 Hz)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ref-seconds", type=float, default=10.0)
    ap.add_argument("--codec-dtype", default=None)
    ap.add_argument("--max-context", type=int, default=2048)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the graphs-vs-eager check")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch

    from voxbox.engines.tts.fish_s2 import load
    from voxbox.types import Audio

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if not cuda:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    result: dict = {"machine": platform.node(), "torch": torch.__version__, "device": str(dev),
                    "gpu": torch.cuda.get_device_name(dev) if cuda else None, "frames": args.frames,
                    "text_chars": len(TEXT), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "command": "python bench/fish_s2_gpu.py " + " ".join(sys.argv[1:])}

    def dump() -> None:  # partial results survive a time-out
        (out / "fish_s2_gpu.json").write_text(json.dumps(result, indent=1, default=str))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    if cuda and not args.no_check:
        # graphs (+ compiled ops) against plain eager on a tiny fp32 model: greedy codes must agree
        with tempfile.TemporaryDirectory() as tmp:
            build_dir(Path(tmp), tiny=True)
            check = {}
            codes = {}
            for label, kw in (("eager", dict(cuda_graphs=False, compile=False)),
                              ("graphs", dict(cuda_graphs=True, compile=False)),
                              ("graphs+compile", dict(cuda_graphs=True, compile=True))):
                eng = load(tmp, device=str(dev), dtype="float32", weights="random", max_context=512, max_frames=64, **kw)
                st = eng.stream("The old lighthouse keeper climbed the stairs.", temperature=0, max_frames=40,
                                min_frames=40)
                list(st)
                codes[label] = st.details["codes"]
                check[label + "_compile_error"] = eng.runner.compile_error
                eng.close()
            for label in ("graphs", "graphs+compile"):
                same = (codes[label] == codes["eager"]).all(0)
                first_diff = int((~same).nonzero()[0, 0]) if (~same).any() else None
                check[label] = {"equal_frames": int(same.sum()), "frames": int(same.numel()), "first_diff": first_diff}
            result["graph_check"] = check
            print(json.dumps(check), flush=True)
            dump()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_dir(root, args.tiny)
        t0 = time.perf_counter()
        placement = {"codec": f"{dev}:{args.codec_dtype}"} if args.codec_dtype else None
        engine = load(root, device=str(dev), weights="random", placement=placement, max_context=args.max_context,
                      max_frames=min(args.frames + 8, args.max_context - 1), cuda_graphs=not args.no_graphs,
                      capture=True)
        sync()
        result["load_and_capture_s"] = time.perf_counter() - t0
        result["placement"] = engine.info.extra["placement"]
        result["cuda_graphs"] = engine.info.extra["cuda_graphs"]
        result["compiled_ops"] = engine.info.extra["compiled_ops"]
        result["compile_error"] = engine.info.extra["compile_error"]
        result["params"] = {c.name: c.params for c in engine.components()}
        sr = engine.codec.sample_rate
        rng = np.random.default_rng(0)
        ref = Audio((0.1 * rng.standard_normal(int(args.ref_seconds * sr))).astype(np.float32), sr)
        t0 = time.perf_counter()
        voice = engine.encode_voice(ref, "This is the reference speech.")
        sync()
        result["voice_encode_first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        voice = engine.encode_voice(ref, "This is the reference speech.")
        result["voice_encode_cached_s"] = time.perf_counter() - t0
        result["voice_cache"] = {"hits": engine.voice_cache_hits, "misses": engine.voice_cache_misses}
        result["reference_frames"] = int(voice.data["codes"].shape[1])
        print(json.dumps({k: result[k] for k in ("load_and_capture_s", "compiled_ops", "compile_error", "params")}), flush=True)
        dump()
        # warm-up (graphs are captured at load; this warms the codec and allocator)
        warm = min(40, args.frames)
        engine.synthesize("Hello.", voice=voice, max_frames=warm, min_frames=warm, seed=0)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        runs = []
        for i in range(args.runs):
            sync()
            t0 = time.perf_counter()
            stream = engine.stream(TEXT, voice=voice, seed=i, max_frames=args.frames, min_frames=args.frames)
            n = 0
            first_chunk_s = None
            for chunk in stream:
                if first_chunk_s is None:
                    first_chunk_s = time.perf_counter() - t0
                n += len(chunk.samples)
                if not np.isfinite(chunk.samples).all():
                    raise RuntimeError("non-finite audio")
            sync()
            wall = time.perf_counter() - t0
            audio_s = n / sr
            st = stream.timings.as_dict()
            runs.append({"wall_s": wall, "audio_s": audio_s, "rtf": wall / audio_s,
                         "first_audio_s": stream.details["first_audio_s"], "first_chunk_seen_s": first_chunk_s,
                         "frames": stream.details["frames"], "ms_per_frame": stream.details["ms_per_frame"],
                         "prompt_tokens": stream.details["prompt_tokens"], "stages_s": st,
                         "stages_sum_s": sum(st.values()), "codec_share": st.get("codec", 0.0) / wall,
                         "finish_reason": stream.details["finish_reason"]})
            print(json.dumps(runs[-1]), flush=True)
            result["runs"] = runs
            dump()
        result["runs"] = runs
        best = min(runs, key=lambda r: r["wall_s"])
        med = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
        result["median"] = med
        result["best"] = best
        if cuda:
            result["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            result["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved(dev) / 2**30
        # weight bytes streamed per frame: every slow layer + the reduced head once; the fast layers
        # once per codebook position, its output head once per residual codebook
        cfg = engine.cfg
        r = engine.runner
        esz = torch.tensor([], dtype=r.slow_dtype).element_size()
        fsz = torch.tensor([], dtype=r.fast_dtype).element_size()
        slow_layers = sum(p.numel() for p in r.slow.layers.parameters()) * esz + r.head.numel() * esz
        fast_layers = sum(p.numel() for p in r.fast.layers.parameters()) * fsz
        fast_out = r.fast.output.weight.numel() * fsz
        per_frame = slow_layers + cfg.num_codebooks * fast_layers + (cfg.num_codebooks - 1) * fast_out
        result["weight_bytes_per_frame"] = per_frame
        result["achieved_GBps_decode"] = per_frame / (med["ms_per_frame"] / 1000) / 1e9
        # per-graph replay times (CUDA events), same context as the run's middle
        if cuda and r.use_graphs:
            span = r.bucket_for(args.frames // 2)
            gs, gf = r._graphs[f"slow{span}"], r._graphs["fast"]
            # replays advance the counters: start them where frame frames/2 would be
            r.frame.zero_()
            r.pos.fill_(r.prompt_len + args.frames // 2 - 60)
            for name, g in (("slow_step_ms", gs), ("fast_loop_ms", gf)):
                for _ in range(5):
                    g.replay()
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(50):
                    g.replay()
                e1.record()
                sync()
                result[name] = e0.elapsed_time(e1) / 50
            result["slow_GBps"] = slow_layers / (result["slow_step_ms"] / 1000) / 1e9
            result["fast_GBps"] = (cfg.num_codebooks * fast_layers + (cfg.num_codebooks - 1) * fast_out) / (result["fast_loop_ms"] / 1000) / 1e9
            result["span_for_graph_timing"] = span
            # prefill alone (the bench prompt's bucket), graph replay
            tb = next(b for b in r.prefill_buckets if b >= r.prompt_len)
            gp = r._graphs.get(f"prefill{tb}")
            if gp is not None:
                gp.replay()
                sync()
                t0 = time.perf_counter()
                for _ in range(10):
                    gp.replay()
                sync()
                result["prefill_graph_ms"] = (time.perf_counter() - t0) * 100
                result["prefill_bucket"] = tb
            dump()
            # codec alone: one streaming window (context 48 + 32 new frames) and the whole utterance
            codes = torch.zeros(cfg.num_codebooks, 80, dtype=torch.long, device=dev)
            for label, n in (("codec_window80_ms", 80), ("codec_full_ms", args.frames)):
                c = torch.randint(0, 1000, (cfg.num_codebooks, n), device=dev)
                engine.codec.decode(c)
                sync()
                t0 = time.perf_counter()
                engine.codec.decode(c)
                sync()
                result[label] = (time.perf_counter() - t0) * 1000
            del codes
        if cuda:
            # what one bf16 GEMV (batch 1) reaches on this GPU for the layer shapes, in a graph
            probe = {}
            t = cfg.text
            shapes = {"wqkv": (t.dim, (t.n_head + 2 * t.n_local_heads) * t.head_dim), "wo": (t.n_head * t.head_dim, t.dim),
                      "w13": (t.dim, 2 * t.intermediate_size), "w2": (t.intermediate_size, t.dim)}
            for name, (k, n) in shapes.items():
                w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
                x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
                g = torch.cuda.CUDAGraph()
                torch.nn.functional.linear(x, w)
                sync()
                with torch.cuda.graph(g):
                    for _ in range(20):
                        torch.nn.functional.linear(x, w)
                g.replay()
                sync()
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(10):
                    g.replay()
                e1.record()
                sync()
                us = e0.elapsed_time(e1) * 1000 / 200
                probe[name] = {"us": us, "GBps": w.numel() * 2 / (us / 1e6) / 1e9}
                del w, g
            layer_us = sum(v["us"] for v in probe.values())
            # decode attention at span 768 (one KV head group = 4 query rows), SDPA vs plain matmuls
            G, Dh, span = t.n_local_heads, t.head_dim, 768
            qg = torch.randn(1, G, t.n_head // G, Dh, device=dev, dtype=torch.bfloat16)
            kk = torch.randn(1, G, span, Dh, device=dev, dtype=torch.bfloat16)
            vv = torch.randn(1, G, span, Dh, device=dev, dtype=torch.bfloat16)
            mk = torch.zeros(1, 1, 1, span, device=dev, dtype=torch.bfloat16)
            F_ = torch.nn.functional
            attn = {"sdpa_additive_mask": lambda: F_.scaled_dot_product_attention(qg, kk, vv, attn_mask=mk),
                    "matmul_softmax": lambda: torch.softmax((qg @ kk.transpose(-1, -2)).float() * Dh ** -0.5 + mk, -1).to(qg.dtype) @ vv}
            for name, fn in attn.items():
                fn()
                sync()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(20):
                        fn()
                g.replay()
                sync()
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(10):
                    g.replay()
                e1.record()
                sync()
                probe["attn_" + name + "_us"] = e0.elapsed_time(e1) * 1000 / 200
            probe["one_layer_gemv_us"] = layer_us
            probe["slow_step_gemv_only_ms"] = layer_us * t.n_layer / 1000
            probe["fast_loop_gemv_only_ms"] = layer_us * cfg.fast.n_layer * cfg.num_codebooks / 1000
            result["gemv_probe"] = probe
            dump()
        result["targets"] = {"rtf<=0.25": med["rtf"] <= 0.25, "first_audio<=0.150s": med["first_audio_s"] <= 0.150,
                             "codec_share<=0.15": med["codec_share"] <= 0.15}
    (out / "fish_s2_gpu.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
