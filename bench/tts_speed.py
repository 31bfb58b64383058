"""Delivered vs requested TTS speed: engine-native duration control alone vs voxbox's split
(native where accurate, PyAV atempo time-stretch for the rest).

Delivered speed = duration at speed 1 / duration at the requested speed, on a three-sentence
paragraph; median (min-max) over ``--runs`` runs (Piper's duration noise differs run to run).
"Native only" sets the engine module's ``NATIVE_SPEED_RANGE`` to the whole 0.25-4 range, which is
what the engines did before.

    python bench/tts_speed.py [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import statistics
from typing import Any

from voxbox.engines.registry import load_engine

TEXT = ("The quick brown fox jumps over the lazy dog. She bought three apples, two oranges, and a loaf of bread. "
        "Although the forecast had promised a calm afternoon, the sailors decided to stay in the harbor.")
SPEEDS = (0.25, 0.5, 2.0, 4.0)


def delivered(engine: Any, speed: float, kwargs: dict[str, Any]) -> float:
    base = engine.synthesize(TEXT, **kwargs).duration
    return base / engine.synthesize(TEXT, speed=speed, **kwargs).duration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"# {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, median (min-max) of {args.runs} runs")
    print("| engine | mode | " + " | ".join(f"asked {s}" for s in SPEEDS) + " |")
    print("|---|---|" + "---:|" * len(SPEEDS))
    for name in ("hibari", "piper"):
        module = importlib.import_module(f"voxbox.engines.tts.{name}")
        engine = load_engine(name)
        kwargs = {"seed": 0} if name == "hibari" else {}
        voxbox_range = module.NATIVE_SPEED_RANGE
        for mode, native_range in (("native only (before)", (0.25, 4.0)), ("voxbox (after)", voxbox_range)):
            module.NATIVE_SPEED_RANGE = native_range
            cells = []
            for s in SPEEDS:
                got = [delivered(engine, s, kwargs) for _ in range(args.runs)]
                cells.append(f"{statistics.median(got):.2f}x ({min(got):.2f}-{max(got):.2f})")
            print(f"| {name} | {mode} | " + " | ".join(cells) + " |", flush=True)
        module.NATIVE_SPEED_RANGE = voxbox_range
        engine.close()


if __name__ == "__main__":
    main()
