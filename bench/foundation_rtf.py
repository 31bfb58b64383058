#!/usr/bin/env python
"""First honest RTF table for the bundled engines (hibari, piper, faster-whisper tiny.en / base).

RTF = processing wall time / audio duration (lower is better; < 1 is faster than real time).
Also printed: process CPU seconds per audio second (less sensitive to other load on a shared
machine than wall time; it counts all of the engine's threads) and the 1-minute load average.
Models are loaded and warmed up once before timing; each row is the median of ``--repeats`` runs.
TTS: the six round-trip test sentences (numbers, punctuation, one long sentence) as one input.
ASR: moonshine-voice's two_cities.wav (44.4 s, read speech), beam size 5, no VAD.

    python bench/foundation_rtf.py [--repeats 3] [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

TEXT = (
    "The quick brown fox jumps over the lazy dog. In 2024, about 350 people attended the meeting in Chicago. "
    "Wait, are you sure? I thought the train left at noon! She bought three apples, two oranges, and a loaf of "
    "bread. Although the weather forecast had promised a calm and sunny afternoon, the sailors decided to stay in "
    "the harbor, because the old fisherman warned them that a storm was gathering beyond the hills to the west. "
    "Chapter 12 begins on page 48; read it before Friday."
)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load avg {os.getloadavg()[0]:.1f} at the end"
    return f"{cpu}, {n} cores{load}"


def bench_tts(name: str, repeats: int, threads: int | None) -> dict:
    from voxbox.engines.registry import load_engine

    t0 = time.perf_counter()
    eng = load_engine(name, **({"threads": threads} if threads else {}))
    load_s = time.perf_counter() - t0
    eng.synthesize("Warm up.")
    rtfs, cpus, dur, stages = [], [], 0.0, {}
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        stream = eng.stream(TEXT)
        audio = stream.collect()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        dur = audio.duration
        rtfs.append(wall / dur)
        cpus.append(cpu / dur)
        stages = stream.timings.as_dict()
    return {
        "engine": name,
        "model": eng.info.model,
        "input": f"{len(TEXT)} chars -> {dur:.1f} s audio",
        "rtf": statistics.median(rtfs),
        "rtf_min": min(rtfs),
        "cpu_rtf": statistics.median(cpus),
        "load_s": load_s,
        "stages": stages,
        "device": eng.info.device,
        "dtype": eng.info.dtype,
    }


def bench_asr(model: str, audio_path: Path, repeats: int, threads: int | None) -> dict:
    from voxbox.audio.decode import decode
    from voxbox.engines.registry import load_engine

    t0 = time.perf_counter()
    eng = load_engine("faster-whisper", model, **({"threads": threads} if threads else {}))
    load_s = time.perf_counter() - t0
    audio = decode(str(audio_path), sample_rate=16000)
    segs, _ = eng.transcribe(audio, language="en")  # warm-up
    list(segs)
    rtfs, cpus, stages = [], [], {}
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        segs, info = eng.transcribe(audio, language="en")
        list(segs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rtfs.append(wall / audio.duration)
        cpus.append(cpu / audio.duration)
        stages = info.timings.as_dict()
    return {
        "engine": "faster-whisper",
        "model": model,
        "input": f"{audio_path.name} ({audio.duration:.1f} s)",
        "rtf": statistics.median(rtfs),
        "rtf_min": min(rtfs),
        "cpu_rtf": statistics.median(cpus),
        "load_s": load_s,
        "stages": stages,
        "device": eng.info.device,
        "dtype": eng.info.dtype,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="engine CPU threads (default: engine default)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args()
    import importlib.util

    assets = Path(list(importlib.util.find_spec("moonshine_voice").submodule_search_locations)[0]) / "assets"
    rows = [bench_tts("hibari", a.repeats, a.threads), bench_tts("piper", a.repeats, a.threads)]
    for model in ("tiny.en", "base"):
        rows.append(bench_asr(model, assets / "two_cities.wav", a.repeats, a.threads))
    mach = machine()  # read after the runs: the 1-minute load average covers them
    cmd = (
        "python bench/foundation_rtf.py" + (f" --threads {a.threads}" if a.threads else "") + f" --repeats {a.repeats}"
    )
    if a.markdown:
        print(
            "| engine | model | device/dtype | input | RTF median (min) | CPU-s per audio-s | load s "
            "| stages (last run, ms) | command | machine |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = ", ".join(f"{k} {v * 1000:.0f}" for k, v in r["stages"].items())
        if a.markdown:
            print(
                f"| {r['engine']} | {r['model']} | {r['device']}/{r['dtype']} | {r['input']} | {r['rtf']:.3f} "
                f"({r['rtf_min']:.3f}) | {r['cpu_rtf']:.3f} | {r['load_s']:.2f} | {st} | `{cmd}` | {mach} |"
            )
        else:
            print(
                f"{r['engine']:15s} {r['model']:17s} {r['device']}/{r['dtype']:8s} {r['input']:28s} "
                f"RTF {r['rtf']:.3f} (min {r['rtf_min']:.3f})  CPU {r['cpu_rtf']:.3f}  load {r['load_s']:.2f}s  [{st}]"
            )
    if not a.markdown:
        print(f"machine: {mach}; command: {cmd}")


if __name__ == "__main__":
    main()
