"""OmniVoice (``omnivoice``) on a GPU beside upstream's own ``OmniVoice.generate``, same weights, same run.

Random weights at the published shapes (Qwen3-0.6B backbone, 8 x 1025 audio vocabulary, Higgs
audio v2 codec at 24 kHz) are written in the upstream layout (``write_random_model(..., "real")``)
and loaded by both: voxbox's engine and upstream's ``OmniVoice.from_pretrained`` (float16, the
dtype upstream's CLI and README use; codec float32 on both). Timing does not depend on weight
values once the text (hence the frame count) and the step count are fixed.

Scenarios: short / medium / long text x {8 steps (the seed's setting), 32 (upstream's default)}
with a voice description, and a cloned voice (5 s reference) at 8 steps. Per scenario both sides
are warmed up, then run interleaved (voxbox, upstream, voxbox, ...) ``--runs`` times: wall time,
time to first audio (voxbox streams; upstream returns the whole clip), RTF, per-call GPU memory
peak above the loaded weights. JSON goes to ``--out`` after every scenario (partial results
survive a time-out).

    python bench/omnivoice_gpu.py --out $OUT                   # H200: about 5 minutes
    python bench/omnivoice_gpu.py --out /tmp/x --tiny --device cpu --runs 2 --steps 2   # smoke test

Needs torch, transformers (>= 5.3), safetensors, tokenizers, numpy and, for the upstream side,
``pip install --no-deps omnivoice==0.2.1 torchaudio==<torch's version>`` plus ``accelerate
soundfile pydub``. No voxbox CLI dependencies (pydantic, typer, rich) are imported.
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

TEXTS = {
    "short": "The quick brown fox jumps over the lazy dog near the river bank.",
    "medium": ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one hundred "
               "and twelve steps as his father had taught him. At the top, he wiped the salt from the great lens, "
               "lit the lamp, and watched its beam sweep across the restless water."),
    "long": ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one hundred "
             "and twelve steps as his father had taught him. At the top, he wiped the salt from the great lens, "
             "lit the lamp, and watched its beam sweep across the restless water. Ships he would never meet "
             "passed safely in the dark, their captains trusting a light they could not see the source of. "
             "Some nights the fog rolled in so thick that he sounded the horn until dawn, and in the morning "
             "he wrote in his log, as always: the light was kept, and no one was lost. Years later, when the "
             "lamp was automated and the keeper's house stood empty, the villagers still said that on foggy "
             "nights they could hear someone climbing the stairs, counting softly to one hundred and twelve."),
}
DESCRIPTION = "female, british accent"
REF_TEXT = "This is the reference recording of the speaker we want to clone today."


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4), "n": len(xs)}


def import_upstream(log: dict[str, Any]) -> Any:
    """Upstream's ``OmniVoice`` class, or None (the reason goes in ``log``)."""
    try:
        import torchaudio  # noqa: F401 - upstream needs the real one for resampling
        log["torchaudio"] = "real"
    except Exception as exc:  # noqa: BLE001 - broken torchaudio builds raise OSError, not ImportError
        # CPU smoke tests only: the tiny codec needs no resampling; the clone scenario is skipped.
        import transformers  # noqa: F401

        log["torchaudio"] = f"stand-in ({type(exc).__name__})"
        stand_in = types.ModuleType("torchaudio")
        stand_in.functional = types.SimpleNamespace(resample=None)  # type: ignore[attr-defined]
        sys.modules["torchaudio"] = stand_in
    try:
        ov = importlib.import_module("omnivoice.models.omnivoice")
        if log["torchaudio"] != "real":
            higgs = importlib.import_module(
                "transformers.models.higgs_audio_v2_tokenizer.modeling_higgs_audio_v2_tokenizer")
            ov.HiggsAudioV2TokenizerModel = higgs.HiggsAudioV2TokenizerModel
        return ov.OmniVoice
    except Exception as exc:  # noqa: BLE001 - report and bench voxbox alone
        log["upstream_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", help="backbone dtype for both sides (upstream uses float16)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", default="8,32")
    ap.add_argument("--texts", default="short,medium,long")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (CPU smoke test of this script)")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--no-clone", action="store_true")
    ap.add_argument("--no-variants", action="store_true", help="skip the eager / compiled-decoder voxbox variants")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop starting scenarios after this many seconds")
    ap.add_argument("--model-dir", default=None, help="reuse a directory written by an earlier run")
    args = ap.parse_args()
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch

    from voxbox.engines.tts import omnivoice
    from voxbox.engines.tts.omnivoice._random import write_random_model
    from voxbox.types import Audio

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = getattr(torch, args.dtype)
    result: dict[str, Any] = {
        "machine": platform.node(), "torch": torch.__version__, "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None, "dtype": args.dtype, "runs": args.runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "size": "tiny" if args.tiny else "real",
        "command": "python bench/omnivoice_gpu.py " + " ".join(sys.argv[1:]), "scenarios": {}, "checks": {}}
    try:
        import transformers
        result["transformers"] = transformers.__version__
    except ImportError:
        pass

    def dump() -> None:
        (out / "omnivoice_gpu.json").write_text(json.dumps(result, indent=1, default=str))

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
        root = Path(tmp.name) / "omnivoice"
    t0 = time.perf_counter()
    if not (root / "config.json").is_file():
        write_random_model(root, "tiny" if args.tiny else "real", device=str(dev) if cuda else "cpu")
    result["write_model_s"] = round(time.perf_counter() - t0, 1)
    dump()

    base = mem()
    t0 = time.perf_counter()
    engine = omnivoice.load(root, device=str(dev), dtype=args.dtype, load_encoder=not args.no_clone)
    sync()
    result["voxbox_load_s"] = round(time.perf_counter() - t0, 2)
    result["voxbox_weights_gb"] = round((mem() - base) / 1e9, 3)
    result["placement"] = engine.info.extra["placement"]
    rate = engine.sample_rate

    upstream = None
    if not args.no_upstream:
        cls = import_upstream(result)
        if cls is not None:
            base = mem()
            t0 = time.perf_counter()
            kw: dict[str, Any] = {"dtype": dtype} if cuda else {"dtype": torch.float32}
            if cuda:
                kw["device_map"] = str(dev)
            upstream = cls.from_pretrained(str(root), **kw).eval()
            sync()
            result["upstream_load_s"] = round(time.perf_counter() - t0, 2)
            result["upstream_weights_gb"] = round((mem() - base) / 1e9, 3)
    dump()

    # -- checks: graph replay == eager on this device; voxbox vs upstream tokens (same seed, same RNG stream)
    check_text = TEXTS["short"]
    if cuda:
        eager = omnivoice.load(root, device=str(dev), dtype=args.dtype, cuda_graphs=False)
        a = engine.synthesize(check_text, steps=8, seed=3, voice_description=DESCRIPTION, postprocess=False).samples
        b = eager.synthesize(check_text, steps=8, seed=3, voice_description=DESCRIPTION, postprocess=False).samples
        result["checks"]["graph_vs_eager_max_abs"] = float(np.abs(a - b).max()) if a.shape == b.shape else "shape"
        result["checks"]["graph_error"] = engine.sampler.graph_error
        del eager
        torch.cuda.empty_cache()
    if upstream is not None:
        torch.manual_seed(3)
        ref = upstream.generate(check_text, instruct=DESCRIPTION, num_step=8, postprocess_output=False)[0]
        ours = engine.synthesize(check_text, steps=8, seed=3, voice_description=DESCRIPTION, postprocess=False).samples
        same = ours.shape == ref.shape
        result["checks"]["vs_upstream_same_length"] = bool(same)
        result["checks"]["vs_upstream_max_abs"] = float(np.abs(ours - ref).max()) if same else None
    dump()

    def run_voxbox(text: str, **kw: Any) -> dict[str, float]:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        before = mem()
        t0 = time.perf_counter()
        first = None
        n = 0
        stream = engine.stream(text, **kw)
        for chunk in stream:
            if first is None:
                first = time.perf_counter() - t0
            n += len(chunk.samples)
        sync()
        wall = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(dev) - before) if cuda else 0
        return {"wall": wall, "ttfa": first or wall, "audio": n / rate, "peak": peak,
                **{f"stage_{k}": v for k, v in stream.timings.as_dict().items()}}

    def run_upstream(text: str, **kw: Any) -> dict[str, float]:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        before = mem()
        t0 = time.perf_counter()
        audio = upstream.generate(text, **kw)[0]
        sync()
        wall = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(dev) - before) if cuda else 0
        return {"wall": wall, "ttfa": wall, "audio": len(audio) / rate, "peak": peak}

    def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
        if not rows:
            return {}
        out_s: dict[str, Any] = {k: stats([r[k] for r in rows]) for k in ("wall", "ttfa")}
        out_s["rtf"] = stats([r["wall"] / max(r["audio"], 1e-9) for r in rows])
        out_s["audio_s"] = round(statistics.median(r["audio"] for r in rows), 3)
        out_s["peak_gpu_gb_above_weights"] = round(max(r["peak"] for r in rows) / 1e9, 3)
        stages = sorted({k for r in rows for k in r if k.startswith("stage_")})
        if stages:
            out_s["stages_median_s"] = {k[6:]: round(statistics.median(r.get(k, 0.0) for r in rows), 4) for k in stages}
        return out_s

    def scenario(key: str, ours: Callable[[], dict[str, float]], theirs: Callable[[], dict[str, float]] | None) -> None:
        if time.perf_counter() - t_start > args.budget_s:
            result["scenarios"][key] = {"skipped": "time budget"}
            return
        entry: dict[str, Any] = {}
        t0 = time.perf_counter()
        cold = ours()  # first call of this shape: includes CUDA graph capture
        entry["voxbox_first_call_s"] = round(cold["wall"], 4)
        entry["voxbox_first_call_ttfa_s"] = round(cold["ttfa"], 4)
        for _ in range(max(0, args.warmup - 1)):
            ours()
        if theirs is not None:
            for _ in range(args.warmup):
                theirs()
        entry["warmup_s"] = round(time.perf_counter() - t0, 2)
        rows_v: list[dict[str, float]] = []
        rows_u: list[dict[str, float]] = []
        for _ in range(args.runs):
            rows_v.append(ours())
            if theirs is not None:
                rows_u.append(theirs())
        entry["voxbox"] = summarize(rows_v)
        if rows_u:
            entry["upstream"] = summarize(rows_u)
            up, ours_s = entry["upstream"], entry["voxbox"]
            entry["speedup_median_wall"] = round(up["wall"]["median"] / ours_s["wall"]["median"], 2)
            entry["speedup_median_ttfa"] = round(up["ttfa"]["median"] / ours_s["ttfa"]["median"], 2)
        result["scenarios"][key] = entry
        print(key, json.dumps({k: entry[k] for k in entry if k in ("voxbox", "upstream", "speedup_median_wall")}),
              flush=True)
        dump()

    steps_list = [int(s) for s in args.steps.split(",") if s]
    names = [n for n in args.texts.split(",") if n]
    for steps in steps_list:
        for name in names:
            text = TEXTS[name]
            seed = 1234

            def ours(text: str = text, steps: int = steps, seed: int = seed) -> dict[str, float]:
                return run_voxbox(text, steps=steps, seed=seed, voice_description=DESCRIPTION)

            def theirs(text: str = text, steps: int = steps, seed: int = seed) -> dict[str, float]:
                torch.manual_seed(seed)
                return run_upstream(text, instruct=DESCRIPTION, num_step=steps)

            scenario(f"design_{name}_steps{steps}", ours, theirs if upstream is not None else None)

    clone_ok = not args.no_clone and (upstream is None or result.get("torchaudio") == "real" or args.tiny)
    if clone_ok:
        gen = np.random.default_rng(0)
        ref_wav = (0.1 * gen.standard_normal(5 * rate)).astype(np.float32)
        t0 = time.perf_counter()
        voice = engine.encode_voice(Audio(ref_wav, rate), REF_TEXT)
        sync()
        result["voxbox_encode_voice_s"] = round(time.perf_counter() - t0, 3)
        prompt = None
        if upstream is not None:
            t0 = time.perf_counter()
            prompt = upstream.create_voice_clone_prompt((torch.from_numpy(ref_wav)[None], rate), ref_text=REF_TEXT)
            sync()
            result["upstream_voice_clone_prompt_s"] = round(time.perf_counter() - t0, 3)
            result["checks"]["clone_codes_equal_fraction"] = float(
                (voice.data["codes"] == prompt.ref_audio_tokens.cpu()).float().mean()) \
                if voice.data["codes"].shape == prompt.ref_audio_tokens.shape else "shape"
        steps = min(steps_list) if steps_list else 8
        for name in names:
            text = TEXTS[name]

            def ours_c(text: str = text) -> dict[str, float]:
                return run_voxbox(text, voice=voice, steps=steps, seed=99)

            def theirs_c(text: str = text) -> dict[str, float]:
                torch.manual_seed(99)
                return run_upstream(text, voice_clone_prompt=prompt, num_step=steps)

            scenario(f"clone_{name}_steps{steps}", ours_c, theirs_c if prompt is not None else None)
    # -- voxbox variants (same weights): eager loop instead of the CUDA graph; compiled DAC decoder
    if cuda and not args.no_variants:
        variants = (("voxbox_eager", {"cuda_graphs": False}), ("voxbox_compiled_decoder", {"compile_decoder": True}))
        for label, kw in variants:
            if time.perf_counter() - t_start > args.budget_s:
                result.setdefault("variants", {})[label] = {"skipped": "time budget"}
                continue
            try:
                var = omnivoice.load(root, device=str(dev), dtype=args.dtype, **kw)
                engine_main, engine = engine, var
                for name in ("short", "long"):
                    text = TEXTS[name]
                    scenario(f"{label}_design_{name}_steps8",
                             lambda text=text: run_voxbox(text, steps=8, seed=1234, voice_description=DESCRIPTION),
                             None)
                engine = engine_main
                del var
                torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - a variant failing must not lose the main results
                result.setdefault("variants", {})[label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            dump()
    result["cli_modules_imported"] = sorted(m for m in ("pydantic", "typer", "rich") if m in sys.modules)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    result["voxbox_cuda_graphs"] = engine.sampler.use_graphs
    dump()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
