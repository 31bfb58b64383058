"""One Whisper in four deployment formats: size on disk, RTF and WER against the source.

The source is the bundled faster-whisper tiny.en read back into a Hugging Face checkpoint
(``voxbox.convert.ct2_reader``), i.e. a float32 safetensors checkpoint like a fine-tune would be.
It is converted with ``voxbox convert`` (``--no-verify``) to CTranslate2 int8 and float32 and to
ONNX float32 and int8, then every format transcribes the bundled human recordings (beckett.wav,
two_cities.wav; 54 s) greedily (beam 1, temperature 0, no conditioning on previous text):

* source: torch-whisper, float32, CPU
* CT2: faster-whisper engine with the matching compute type (int8 / float32)
* ONNX: onnx-whisper engine (CPU execution provider)

RTF = transcription wall time / audio duration, best of ``--runs`` after one warm-up call (the
machine may be shared, so the best run is the least disturbed one). WER is each format's corpus
word error rate against the source's transcripts (lower-cased, punctuation dropped).

    python bench/convert_formats.py --out bench-results/convert [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

FORMATS = [  # (label, voxbox convert args, runner target, quantization)
    ("CT2 int8", ["--to", "ct2", "--quantization", "int8"], "ct2", "int8"),
    ("CT2 float32", ["--to", "ct2", "--quantization", "float32"], "ct2", "float32"),
    ("ONNX fp32", ["--to", "onnx"], "onnx", "float32"),
    ("ONNX int8", ["--to", "onnx", "--quantize", "int8"], "onnx", "int8"),
]


def _time_side(runner, audios, runs: int) -> tuple[list[str], float]:
    from voxbox.convert.verify import _run_side

    best, texts = None, []
    for _ in range(runs):
        texts, secs = _run_side(runner, audios)
        best = secs if best is None else min(best, secs)
    return texts, float(best or 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench-results/convert"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="OMP/intra-op threads (0: library default)")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from voxbox.convert import verify as V
    from voxbox.convert.ct2_reader import write_hf_checkpoint
    from voxbox.convert.manifest import dir_size
    from voxbox.models.bundled import whisper_tiny_en_dir

    args.out.mkdir(parents=True, exist_ok=True)
    src = args.out / "tiny.en-hf"
    if not (src / "model.safetensors").is_file():
        write_hf_checkpoint(whisper_tiny_en_dir(), src)
    files = V.default_verify_audio()
    audios = V._load_audio(files)
    total = sum(a.duration for a in audios)
    src_size = sum(f.stat().st_size for f in src.iterdir() if f.is_file())

    rows = []
    run, name, dev, dtype, close = V._source_runner(src, "cpu", {})
    ref, secs = _time_side(run, audios, args.runs)
    close()
    rows.append({"format": "source (HF safetensors, torch-whisper fp32)", "engine": name, "dtype": dtype,
                 "size_bytes": src_size, "seconds": secs, "rtf": secs / total, "wer": 0.0, "convert_seconds": None})
    print(f"source: {secs:.2f} s, RTF {secs / total:.3f}", flush=True)

    for label, conv_args, target, q in FORMATS:
        out = args.out / label.replace(" ", "-").lower()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "voxbox.cli", "convert", str(src), str(out), *conv_args,
                        "--no-verify", "--force"], check=True, stdout=subprocess.DEVNULL)
        conv = time.perf_counter() - t0
        run, name, dev, dtype, close = V._target_runner(target, out, q, "cpu", {})
        texts, secs = _time_side(run, audios, args.runs)
        close()
        w = V.wer(ref, texts)
        size = dir_size(out)
        rows.append({"format": label, "engine": name, "dtype": dtype, "size_bytes": size, "seconds": secs,
                     "rtf": secs / total, "wer": w, "convert_seconds": conv, "texts": texts})
        print(f"{label}: {size / 1e6:.1f} MB, {secs:.2f} s, RTF {secs / total:.3f}, WER {w:.4f}", flush=True)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
            "cpus": os.cpu_count(), "audio_seconds": total, "files": [str(f) for f in files], "runs": args.runs,
            "threads": args.threads or "default", "source_texts": ref}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n| format | engine | dtype | size on disk | RTF | x realtime | WER vs source | convert time |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        conv = f"{r['convert_seconds']:.0f} s" if r["convert_seconds"] is not None else "-"
        print(f"| {r['format']} | {r['engine']} | {r['dtype']} | {r['size_bytes'] / 1e6:.1f} MB | {r['rtf']:.3f} | "
              f"{1 / r['rtf']:.1f} | {r['wer']:.4f} | {conv} |")


if __name__ == "__main__":
    main()
