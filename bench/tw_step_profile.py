"""Where a batch-1 torch-whisper decode step spends its GPU time, kernel by kernel (issue #15).

Run from the repository root on a CUDA machine (torch, transformers, triton)::

    OUT=/tmp/out python bench/tw_step_profile.py [--shape large-v3] [--sweep]

For the compiled step (``FastStep`` in a CUDA graph) and the Triton step (``kernels.KernelStep``),
one window of forced tokens is profiled with ``torch.profiler``; kernel time is summed per kernel
name and divided by the number of tokens, so the table reads "µs of this kernel per token". The
same window's wall time per token (graph replays) is printed beside it: the difference between the
two is the time the GPU sat between kernels.

``--sweep`` times every GEMV role of the Triton step and its two attentions on their own, each in a
CUDA graph of ``--reps`` launches, for a grid of tiles (and split counts), and reports µs per launch
and GB/s for each. Writes ``$OUT/tw_step_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "src"))

import torch  # noqa: E402
from torch_whisper_gpu import SHAPES, models, sync, tokenizer  # noqa: E402

from voxbox.engines.asr.torch_whisper import kernels as K  # noqa: E402
from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner  # noqa: E402
from voxbox.engines.graphs import capture_graph  # noqa: E402


def profile_decode(runner: Runner, enc, prompt, rules, ntok: int) -> dict:
    """Kernel time per token by kernel name for one decode (after a warm one), and the wall time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        runner.decode(enc, prompt, rules, ntok)
        walls = []
        for _ in range(5):
            sync()
            t0 = time.perf_counter()
            runner.decode(enc, prompt, rules, ntok)
            sync()
            walls.append(time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner.decode(enc, prompt, rules, ntok)
            sync()
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for row in prof.key_averages():
        dev_us = float(getattr(row, "self_device_time_total", 0.0) or getattr(row, "self_cuda_time_total", 0.0) or 0.0)
        kind = getattr(getattr(row, "device_type", None), "name", "")
        if dev_us <= 0 or (kind != "CUDA" and row.self_cpu_time_total > 0):
            continue  # a CPU op (its kernels are rows of their own)
        entry = per[row.key[:90]]
        entry[0] += dev_us
        entry[1] += row.count
    total = sum(v[0] for v in per.values())
    rows = sorted(((n, v[0] / ntok, v[1] / ntok) for n, v in per.items()), key=lambda r: -r[1])
    return {"wall_ms_per_token": round(statistics.median(walls) / ntok * 1e3, 4),
            "kernel_ms_per_token": round(total / ntok / 1e3, 4),
            "kernels_per_token": round(sum(v[1] for v in per.values()) / ntok, 1),
            "top": [{"kernel": n, "us_per_token": round(us, 2), "launches_per_token": round(c, 2)}
                    for n, us, c in rows[:30]]}


def graph_time(fn, reps: int) -> float:
    """µs per call of ``fn`` replayed ``reps`` times inside one CUDA graph (median of 5 replays)."""

    def calls() -> None:
        for _ in range(reps):
            fn()

    g = capture_graph(calls, (), None)
    g.replay()
    sync()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        g.replay()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) / reps * 1e6


def sweep(step: K.KernelStep, cache, reps: int, what: str = "all") -> dict:
    """Each role of layer 0 alone, over a grid of tiles; each attention over split counts."""
    m = step.model
    L = m.decoder.blocks[0]
    B = step.buf
    x, y, z = B.x
    for t in (x, y, z):
        t.normal_()
    pos = torch.tensor([20], device=x.device)
    kvc = cache.self_kv[0, :, 0]
    qw, qb, cw, cb = K._fused(L)
    el = x.element_size()
    calls = {
        "qkv": lambda: step._gemv("qkv", x, qw, qb, B.q,
                                  ln=(L.self_attn_layer_norm.weight, L.self_attn_layer_norm.bias),
                                  qkv=(kvc, pos, kvc.stride(0), kvc.stride(1), kvc.stride(2))),
        "o": lambda: step._gemv("o", B.attn, L.self_attn.out_proj.weight, L.self_attn.out_proj.bias, y, res=x),
        "cq": lambda: step._gemv("cq", y, cw, cb, B.cq,
                                 ln=(L.encoder_attn_layer_norm.weight, L.encoder_attn_layer_norm.bias)),
        "co": lambda: step._gemv("co", B.cattn, L.encoder_attn.out_proj.weight, L.encoder_attn.out_proj.bias, z,
                                 res=y),
        "fc1": lambda: step._gemv("fc1", z, L.fc1.weight, L.fc1.bias, B.hid,
                                  ln=(L.final_layer_norm.weight, L.final_layer_norm.bias), act=step.act),
        "fc2": lambda: step._gemv("fc2", B.hid, L.fc2.weight, L.fc2.bias, x, res=z),
        "logits": lambda: step._gemv("logits", x, m.decoder.embed_tokens.weight, None, B.logits,
                                     ln=(m.decoder.layer_norm.weight, m.decoder.layer_norm.bias)),
    }
    grid = [K.GemvConfig(bn, bk, 4) for bn in (1, 2, 4, 8, 16) for bk in (256, 512, 1024)]
    out: dict = {"gemv": {}, "attention": {}}
    for name, fn in calls.items() if what == "all" else ():
        role = name.split("_")[0]
        n, k = step.dims[role]
        nbytes = n * k * el
        default = step.cfg[role]
        res = []
        pdl = step.pdl
        for flag in (False, True) if pdl else (False,):
            step.pdl = flag
            us = graph_time(fn, reps)
            res.append({"cfg": "default, pdl" if flag else "default, no pdl", "us": round(us, 2),
                        "gbps": round(nbytes / us / 1e3, 1)})
        res = res[-1:] + res[:-1]  # the step's own setting first
        for cfg in grid:
            step.cfg[role] = cfg
            try:
                us = graph_time(fn, reps)
            except Exception as exc:  # noqa: BLE001 - a tile Triton cannot build
                res.append({"cfg": [cfg.block_n, cfg.block_k, cfg.num_warps], "error": repr(exc)[:120]})
                continue
            res.append({"cfg": [cfg.block_n, cfg.block_k, cfg.num_warps], "us": round(us, 2),
                        "gbps": round(nbytes / us / 1e3, 1)})
        step.cfg[role] = default
        ok = [r for r in res if "us" in r]
        out["gemv"][name] = {"n": n, "k": k, "mb": round(nbytes / 1e6, 2), "default": ok[0] if ok else None,
                             "best": sorted(ok, key=lambda r: r["us"])[:5]}
        print(name, out["gemv"][name], flush=True)
    ck, cv = cache.cross_k[0, 0], cache.cross_v[0, 0]
    for splits in (2, 4, 8, 16, 32):
        parts = (torch.empty(splits, step.heads, device=x.device), torch.empty(splits, step.heads, device=x.device),
                 torch.empty(splits, step.d, device=x.device),
                 torch.zeros(step.heads, device=x.device, dtype=torch.int32))
        if -(-ck.shape[1] // splits) <= 256:
            us = graph_time(lambda p=parts, n=splits: step._attend(B.cq, ck, cv, p, B.cattn, n, ck.shape[1]), reps)
            nbytes = 2 * ck.numel() * el
            out["attention"][f"cross_splits{splits}"] = {"us": round(us, 2), "gbps": round(nbytes / us / 1e3, 1)}
        for kv_len in (64, 448):
            us = graph_time(lambda p=parts, n=splits, kl=kv_len:
                            step._attend(B.q, kvc[0], kvc[1], p, B.attn, n, kl, pos), reps)
            out["attention"][f"self{kv_len}_splits{splits}"] = {"us": round(us, 2)}
    print(out["attention"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="large-v3")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--sweep", nargs="?", const="all", choices=["all", "attention"], default=None,
                    help="time the Triton step's kernels alone: all (GEMV tiles and attention splits) or attention")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--no-triton-step", action="store_true", help="profile the compiled step only")
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "/tmp/out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    _, ours = models(args.shape, dev, torch.float16)
    tok = tokenizer("", ours.dims.vocab_size)
    forced = Rules(suppress=(tok.eot,), begin_suppress=(), timestamps=False)
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    feats = torch.randn(1, SHAPES[args.shape]["num_mel_bins"], 3000, device=dev, dtype=torch.float16)
    res: dict = {"shape": args.shape, "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tokens": args.tokens}
    comp = Runner(ours, tok, use_graphs=True, fast=True, kernels=False)
    with torch.inference_mode():
        enc = comp.encode(feats)
    res["compiled"] = profile_decode(comp, enc, prompt, forced, args.tokens)
    print(json.dumps(res["compiled"], indent=1), flush=True)
    (out_dir / "tw_step_profile.json").write_text(json.dumps(res, indent=1))
    if not args.no_triton_step:
        tri = Runner(ours, tok, use_graphs=True, fast=True, kernels=True)
        res["triton_error"] = tri.kernel_error
        if tri.kstep is not None:
            res["triton"] = profile_decode(tri, enc, prompt, forced, args.tokens)
            res["triton"]["pdl"] = tri.kstep.pdl
            print(json.dumps(res["triton"], indent=1), flush=True)
            (out_dir / "tw_step_profile.json").write_text(json.dumps(res, indent=1))
            off = Runner(ours, tok, use_graphs=True, fast=True, kernels=False)
            off.kstep = K.KernelStep(ours, pdl=False)
            res["triton_no_pdl"] = profile_decode(off, enc, prompt, forced, args.tokens)
            print(json.dumps(res["triton_no_pdl"], indent=1), flush=True)
            (out_dir / "tw_step_profile.json").write_text(json.dumps(res, indent=1))
            if args.sweep:
                with torch.inference_mode():
                    cache = ours.new_cache(1)
                    cache.cross_k.normal_()
                    cache.cross_v.normal_()
                    res["sweep"] = sweep(tri.kstep, cache, args.reps, args.sweep)
    (out_dir / "tw_step_profile.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
