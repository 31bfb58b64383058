"""Round trip through the English front-end: TTS -> faster-whisper -> WER after Whisper's English
normaliser, on the 35 sentences of bench/tts_text_cases.yaml (numbers, money, dates, times, units,
abbreviations, URLs, e-mail addresses). The reference is each sentence's expected spoken form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from voxbox.engines.registry import load_engine
from voxbox.errors import VoxboxError
from voxbox.text import normalize_for_speech, wer
from voxbox.types import Audio

CASES = yaml.safe_load((Path(__file__).parents[2] / "bench" / "tts_text_cases.yaml").read_text(encoding="utf-8"))
#: Bounds on the corpus WER against the spoken forms, greedy base on cpu-2c (2026-12-03): with the
#: front-end on hibari 0.076 and piper 0.099, with it off 0.123 and 0.219 -- so each bound fails
#: without the front-end. Most of what remains is Whisper writing "3.30" for "three thirty".
MAX_WER = {"hibari": 0.10, "piper": 0.15}


def test_cases_cover_the_categories() -> None:
    assert len(CASES) >= 30
    text = " ".join(c["text"] for c in CASES)
    for needle in ("$", "€", "£", "°C", "km", "@", "www.", "p.m.", "Dr.", "St.", "/", "%", "(415)", "1776", "21st"):
        assert needle in text, needle


def test_normalised_text_is_the_expected_spoken_form() -> None:
    # round-trip WER hides misreadings Whisper rewrites as digits; check the text itself too
    for c in CASES:
        assert normalize_for_speech(c["text"]) == c["spoken"], c["text"]


@pytest.fixture(scope="module")
def asr():
    try:
        engine = load_engine("faster-whisper", "base")
    except VoxboxError:  # voxbox[base] not installed
        engine = load_engine("faster-whisper", "tiny.en")
    yield engine
    engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["hibari", "piper"])
def test_round_trip_wer(engine_name: str, asr) -> None:
    tts = load_engine(engine_name)
    parts = []
    for c in CASES:
        audio = tts.synthesize(c["text"], **({"seed": 0} if engine_name == "hibari" else {}))
        parts += [audio.samples, np.zeros(int(0.6 * audio.sample_rate), np.float32)]
    tts.close()
    # one long-form transcription of all 35 sentences (0.6 s apart) instead of 35 thirty-second windows:
    # 5x less encoder work, and the corpus WER matches the per-sentence one within 0.01
    segments, _ = asr.transcribe(Audio(np.concatenate(parts), audio.sample_rate), language="en", beam_size=1,
                                 condition_on_previous_text=False)
    hyp = " ".join(s.text for s in segments)
    score = wer(" ".join(c["spoken"] for c in CASES), hyp)
    assert score <= MAX_WER[engine_name], f"{engine_name}: WER {score:.3f}\n{hyp}"
