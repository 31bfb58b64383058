"""Round-trip WER of the English TTS front-end: each engine with the normaliser off vs on.

For every sentence in ``bench/tts_text_cases.yaml`` (numbers, money, dates, times, units,
abbreviations, URLs...): TTS -> faster-whisper base (tiny.en if base is not installed) ->
corpus WER, both sides through Whisper's English normaliser (:mod:`voxbox.text.scoring`).

Whisper's normaliser does not map a correct reading and its written form to the same words in
either direction: the written "12 km" stays "12 km" (so a correct "twelve kilometers" scores two
errors), while the spoken "W W W dot example dot org" stays spelled out (so a correct transcript
"www.example.org" scores four). Each sentence is therefore scored against its accepted references,
the written sentence and the expected spoken form from the YAML, and counts the closer one
(``score_written: false`` in the YAML drops the written one where Whisper's normaliser would
reward a misreading: "Baker St." normalises to "baker saint"). Both single-reference WERs are
reported too. "off" passes ``normalize=False`` to the engine (its own front-end:
hibari's misaki rules, Piper's espeak-ng); "on" runs :func:`voxbox.text.normalize_for_speech` first.

Round-trip WER hides misreadings that Whisper rewrites as digits ("dollar three hundred" is heard
as "$300"), so the script also checks the normalised text itself against the expected spoken form
in the YAML (exact sentences, and word errors after lower-casing and dropping punctuation).

    python bench/tts_text_wer.py [--engines hibari,piper] [--asr base] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import yaml

from voxbox.engines.registry import load_engine
from voxbox.errors import VoxboxError
from voxbox.text import normalize_for_speech
from voxbox.text.scoring import normalize_text, wer, word_errors

CASES = Path(__file__).with_name("tts_text_cases.yaml")


def load_cases(path: Path = CASES) -> list[dict[str, str]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _words(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", s.lower()).split())


def text_check(cases: list[dict[str, str]]) -> dict[str, Any]:
    outs = [normalize_for_speech(c["text"]) for c in cases]
    exact = sum(o == c["spoken"] for o, c in zip(outs, cases, strict=False))
    t0 = time.perf_counter()
    for _ in range(20):
        for c in cases:
            normalize_for_speech(c["text"])
    per_sentence_us = (time.perf_counter() - t0) / (20 * len(cases)) * 1e6
    word_wer = wer([_words(c["spoken"]) for c in cases], [_words(o) for o in outs], normalize=False)
    misses = [
        {"text": c["text"], "got": o, "want": c["spoken"]}
        for o, c in zip(outs, cases, strict=False)
        if o != c["spoken"]
    ]
    return {
        "sentences": len(cases),
        "exact": exact,
        "word_wer": word_wer,
        "us_per_sentence": per_sentence_us,
        "misses": misses,
    }


def load_asr(name: str) -> Any:
    try:
        return load_engine("faster-whisper", name)
    except VoxboxError as exc:  # base is an optional extra
        print(f"# {name} unavailable ({exc}); using tiny.en")
        return load_engine("faster-whisper", "tiny.en")


def accepted_references(case: dict[str, Any]) -> list[str]:
    return [case["spoken"]] + ([case["text"]] if case.get("score_written", True) else [])


def best_reference_wer(cases: list[dict[str, Any]], hyps: list[str]) -> float:
    """Corpus WER where each sentence counts against its closest accepted reference."""
    edits = words = 0
    for case, hyp in zip(cases, hyps, strict=False):
        h = normalize_text(hyp)
        scored = [word_errors(normalize_text(r), h) for r in accepted_references(case)]
        e, n = min(scored, key=lambda en: en[0] / max(en[1], 1))
        edits += e
        words += n
    return edits / max(words, 1)


def round_trip(tts: Any, asr: Any, cases: list[dict[str, str]], normalize: bool) -> dict[str, Any]:
    hyps, per = [], []
    for c in cases:
        opts: dict[str, Any] = {"normalize": normalize}
        if tts.info.name == "hibari":
            opts["seed"] = 0
        audio = tts.synthesize(c["text"], **opts)
        segments, _ = asr.transcribe(audio, language="en", beam_size=5)
        hyp = "".join(s.text for s in segments).strip()
        hyps.append(hyp)
        per.append(
            {
                "text": c["text"],
                "heard": hyp,
                "wer": best_reference_wer([c], [hyp]),
                "ref_norm": normalize_text(c["spoken"]),
                "hyp_norm": normalize_text(hyp),
            }
        )
    errors = sum(1 for p in per if p["wer"] > 0)
    return {
        "wer": best_reference_wer(cases, hyps),
        "wer_vs_spoken": wer([c["spoken"] for c in cases], hyps),
        "wer_vs_written": wer([c["text"] for c in cases], hyps),
        "sentences_with_errors": errors,
        "per_sentence": per,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="hibari,piper")
    ap.add_argument("--asr", default="base", help="faster-whisper model for the round trip (default base)")
    ap.add_argument("--json", type=Path, help="write every transcript here")
    args = ap.parse_args()
    cases = load_cases()
    check = text_check(cases)
    asr = load_asr(args.asr)
    results: dict[str, Any] = {"asr": asr.info.model, "text_check": check, "engines": {}}
    for name in args.engines.split(","):
        tts = load_engine(name)
        results["engines"][name] = {mode: round_trip(tts, asr, cases, mode == "on") for mode in ("off", "on")}
        tts.close()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# {len(cases)} sentences, ASR faster-whisper {results['asr']}, {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}, {now}"
    )
    print(
        "| engine | WER off | WER on | sentences with errors off → on | vs spoken form only off → on "
        "| vs written text only off → on |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results["engines"].items():
        off, on = r["off"], r["on"]
        print(
            f"| {name} | {off['wer']:.3f} | **{on['wer']:.3f}** | "
            f"{off['sentences_with_errors']} → {on['sentences_with_errors']} | "
            f"{off['wer_vs_spoken']:.3f} → {on['wer_vs_spoken']:.3f} | "
            f"{off['wer_vs_written']:.3f} → {on['wer_vs_written']:.3f} |"
        )
    print(
        f"\nNormalised text vs expected spoken form: {check['exact']}/{check['sentences']} sentences exact, "
        f"word WER {check['word_wer']:.3f}, {check['us_per_sentence']:.0f} µs per sentence"
    )
    for m in check["misses"]:
        print(f"  MISS {m['text']!r}: got {m['got']!r}, want {m['want']!r}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
