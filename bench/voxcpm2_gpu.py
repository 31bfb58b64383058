"""VoxCPM2 (``voxcpm2``) on a GPU beside upstream's own ``VoxCPM2Model``, same weights, same run.

Random weights at the published VoxCPM2 shapes are written in the upstream layout
(``write_random_model(..., "real")``) and loaded by voxbox's engine and by upstream's
``VoxCPM2Model.from_local`` (eager, and ``optimize=True``: upstream's own torch.compile
"reduce-overhead" of the LM steps, the local encoder and the DiT), both in bfloat16 with the AudioVAE
in float32 as upstream runs it. The number of generated patches is forced (``min_len`` = ``max_len``
= N) on both sides, so the work is the same whatever the random stop head says: N = 25 / 94 / 250
patches = 4 / 15 / 40 s of 48 kHz audio for the short / medium / long texts.

Per scenario (text x timesteps in {5: the seed's, 10: upstream's default}) both sides are warmed
up, then run interleaved ``--runs`` times. voxbox streams (time to first audio = its first chunk);
upstream's time to first audio is measured on its streaming API (``generate_with_prompt_cache_
streaming``, one patch per chunk) in separate runs, its total on the one-call API.

    python bench/voxcpm2_gpu.py --out $OUT                       # H200: about 6 minutes
    python bench/voxcpm2_gpu.py --out /tmp/x --tiny --device cpu --runs 1 --timesteps 2 --no-compiled

Needs torch, transformers, safetensors, einops, pydantic, numpy and ``pip install --no-deps
voxcpm==2.0.3`` (+ tqdm and huggingface_hub for upstream's module imports; librosa and torchaudio
are stood in for when missing: upstream uses them only to read audio files, which this never does).
No voxbox CLI dependencies (typer, rich) are imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

TEXTS = {"short": ("The quick brown fox jumps over the lazy dog near the river bank.", 25),
         "medium": ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one "
                    "hundred and twelve steps as his father had taught him. At the top, he wiped the salt from the "
                    "great lens, lit the lamp, and watched its beam sweep across the restless water.", 94),
         "long": ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one "
                  "hundred and twelve steps as his father had taught him. At the top, he wiped the salt from the great "
                  "lens, lit the lamp, and watched its beam sweep across the restless water. Ships he would never meet "
                  "passed safely in the dark, their captains trusting a light they could not see the source of. Some "
                  "nights the fog rolled in so thick that he sounded the horn until dawn, and in the morning he wrote "
                  "in his log, as always: the light was kept, and no one was lost.", 250)}


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4), "n": len(xs)}


def import_upstream(log: dict[str, Any]) -> Any:
    for name in ("torchaudio", "librosa"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - broken builds raise OSError
            sys.modules[name] = types.ModuleType(name)
            log.setdefault("stand_ins", []).append(name)
    try:
        return importlib.import_module("voxcpm.model.voxcpm2").VoxCPM2Model
    except Exception as exc:  # noqa: BLE001 - bench voxbox alone, say why
        log["upstream_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timesteps", default="5,10")
    ap.add_argument("--texts", default="short,medium,long")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--no-compiled", action="store_true",
                    help="skip the torch.compile variants (voxbox compile=True, upstream optimize=True)")
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch

    from voxbox.engines.tts import voxcpm2
    from voxbox.engines.tts.voxcpm2._random import write_random_model

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = "bfloat16" if cuda else "float32"
    result: dict[str, Any] = {
        "machine": platform.node(), "torch": torch.__version__, "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None, "dtype": dtype, "runs": args.runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "size": "tiny" if args.tiny else "real",
        "command": "python bench/voxcpm2_gpu.py " + " ".join(sys.argv[1:]), "scenarios": {}, "checks": {}}

    def dump() -> None:
        (out / "voxcpm2_gpu.json").write_text(json.dumps(result, indent=1, default=str))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def mem() -> int:
        return torch.cuda.memory_allocated(dev) if cuda else 0

    tmp = None
    if args.model_dir:
        root = Path(args.model_dir)
    else:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "voxcpm2"
    t0 = time.perf_counter()
    if not (root / "config.json").is_file():
        write_random_model(root, "tiny" if args.tiny else "real", device=str(dev) if cuda else "cpu")
    result["write_model_s"] = round(time.perf_counter() - t0, 1)
    dump()

    base = mem()
    t0 = time.perf_counter()
    engine = voxcpm2.load(root, device=str(dev), dtype=dtype)
    sync()
    result["voxbox_load_s"] = round(time.perf_counter() - t0, 2)
    result["voxbox_weights_gb"] = round((mem() - base) / 1e9, 3)
    rate = engine.sample_rate

    if cuda:  # graph replay vs the eager loop on this device: same patches (bf16: same kernels)
        text = TEXTS["short"][0]
        a = engine.synthesize(text, timesteps=5, seed=3, min_len=8, max_len=8).samples
        eager = voxcpm2.load(root, device=str(dev), dtype=dtype, cuda_graphs=False)
        b = eager.synthesize(text, timesteps=5, seed=3, min_len=8, max_len=8).samples
        result["checks"]["graph_vs_eager_max_abs"] = float(np.abs(a - b).max()) if a.shape == b.shape else "shape"
        result["checks"]["graph_error"] = engine.runner.graph_error
        del eager
        torch.cuda.empty_cache()
    dump()

    compiled = None
    if cuda and not args.no_compiled:  # voxbox with torch.compile'd modules inside its step graph
        try:
            t0 = time.perf_counter()
            compiled = voxcpm2.load(root, device=str(dev), dtype=dtype, compile=True)
            compiled.synthesize(TEXTS["short"][0], timesteps=5, seed=3, min_len=4, max_len=4)
            result["voxbox_compiled_load_and_compile_s"] = round(time.perf_counter() - t0, 1)
        except Exception as exc:  # noqa: BLE001 - report, keep the main results
            result["voxbox_compiled_error"] = f"{type(exc).__name__}: {exc}"[:500]
            compiled = None
    dump()

    cls = None if args.no_upstream else import_upstream(result)
    ups: dict[str, Any] = {}
    if cls is not None:
        for label, optimize in (("eager", False), ("compiled", True)):
            if optimize and (args.no_compiled or not cuda):
                continue
            try:
                base = mem()
                t0 = time.perf_counter()
                ups[label] = cls.from_local(str(root), optimize=optimize, device=str(dev))
                sync()
                result[f"upstream_{label}_load_s"] = round(time.perf_counter() - t0, 2)
                result[f"upstream_{label}_weights_gb"] = round((mem() - base) / 1e9, 3)
            except Exception as exc:  # noqa: BLE001
                result[f"upstream_{label}_error"] = f"{type(exc).__name__}: {exc}"[:500]
    dump()

    def run_voxbox(text: str, n: int, steps: int, eng: Any = None) -> dict[str, float]:
        eng = eng or engine
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        before = mem()
        t0 = time.perf_counter()
        first = None
        samples = 0
        stream = eng.stream(text, timesteps=steps, seed=1234, min_len=n, max_len=n)
        for chunk in stream:
            if first is None:
                first = time.perf_counter() - t0
            samples += len(chunk.samples)
        sync()
        wall = time.perf_counter() - t0
        return {"wall": wall, "ttfa": first or wall, "audio": samples / rate,
                "peak": (torch.cuda.max_memory_allocated(dev) - before) if cuda else 0,
                **{f"stage_{k}": v for k, v in stream.timings.as_dict().items()}}

    def run_upstream(model: Any, text: str, n: int, steps: int, streaming: bool) -> dict[str, float]:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        before = mem()
        torch.manual_seed(1234)
        t0 = time.perf_counter()
        kw = dict(target_text=text, prompt_cache=None, min_len=n, max_len=n, inference_timesteps=steps, cfg_value=2.0,
                  retry_badcase=False)
        first = None
        samples = 0
        if streaming:
            for wav, _, _ in model.generate_with_prompt_cache_streaming(**kw):
                if first is None:
                    first = time.perf_counter() - t0
                samples += wav.numel()
        else:
            wav, _, _ = model.generate_with_prompt_cache(**kw)
            samples = wav.numel()
        sync()
        wall = time.perf_counter() - t0
        return {"wall": wall, "ttfa": first or wall, "audio": samples / rate,
                "peak": (torch.cuda.max_memory_allocated(dev) - before) if cuda else 0}

    def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
        s: dict[str, Any] = {k: stats([r[k] for r in rows]) for k in ("wall", "ttfa")}
        s["rtf"] = stats([r["wall"] / max(r["audio"], 1e-9) for r in rows])
        s["audio_s"] = round(statistics.median(r["audio"] for r in rows), 3)
        s["peak_gpu_gb_above_weights"] = round(max(r["peak"] for r in rows) / 1e9, 3)
        stages = sorted({k for r in rows for k in r if k.startswith("stage_")})
        if stages:
            s["stages_median_s"] = {k[6:]: round(statistics.median(r.get(k, 0.0) for r in rows), 4) for k in stages}
        return s

    def scenario(key: str, sides: dict[str, Callable[[], dict[str, float]]]) -> None:
        if time.perf_counter() - t_start > args.budget_s:
            result["scenarios"][key] = {"skipped": "time budget"}
            return
        entry: dict[str, Any] = {}
        t0 = time.perf_counter()
        for name, fn in sides.items():
            first = fn()
            if name == "voxbox":
                entry["voxbox_first_call_s"] = round(first["wall"], 4)
            for _ in range(args.warmup - 1):
                fn()
        entry["warmup_s"] = round(time.perf_counter() - t0, 2)
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, fn in sides.items():
                rows[name].append(fn())
        for name, r in rows.items():
            entry[name] = summarize(r)
        v = entry["voxbox"]["wall"]["median"]
        for name in rows:
            if name.startswith("upstream") and not name.endswith("streaming"):
                entry[f"speedup_vs_{name}"] = round(entry[name]["wall"]["median"] / v, 2)
                if "voxbox_compiled" in entry:
                    entry[f"speedup_compiled_vs_{name}"] = round(
                        entry[name]["wall"]["median"] / entry["voxbox_compiled"]["wall"]["median"], 2)
        if "upstream_eager_streaming" in entry:
            entry["ttfa_speedup_vs_upstream_streaming"] = round(
                entry["upstream_eager_streaming"]["ttfa"]["median"] / entry["voxbox"]["ttfa"]["median"], 2)
        result["scenarios"][key] = entry
        print(key, json.dumps({k: entry[k] for k in entry if k.startswith(("speedup", "ttfa_speedup"))}),
              flush=True)
        dump()

    for steps in [int(s) for s in args.timesteps.split(",") if s]:
        for name in [n for n in args.texts.split(",") if n]:
            text, n = TEXTS[name]
            if args.tiny:
                n = max(2, n // 10)
            sides: dict[str, Callable[[], dict[str, float]]] = {
                "voxbox": lambda text=text, n=n, steps=steps: run_voxbox(text, n, steps)}
            if compiled is not None:
                sides["voxbox_compiled"] = lambda text=text, n=n, steps=steps: run_voxbox(text, n, steps, compiled)
            for label, model in ups.items():
                sides[f"upstream_{label}"] = (lambda m=model, text=text, n=n, steps=steps:
                                              run_upstream(m, text, n, steps, False))
            if "eager" in ups and name != "long":
                sides["upstream_eager_streaming"] = (lambda m=ups["eager"], text=text, n=n, steps=steps:
                                                     run_upstream(m, text, n, steps, True))
            scenario(f"{name}_{n}patches_timesteps{steps}", sides)
    result["cli_modules_imported"] = sorted(m for m in ("typer", "rich") if m in sys.modules)
    result["voxbox_cuda_graphs"] = engine.runner.use_graphs
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    dump()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
