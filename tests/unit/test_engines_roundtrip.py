"""Round trip: each TTS engine speaks varied English; faster-whisper tiny.en must read it back."""

from __future__ import annotations

import time

import pytest

from voxbox.engines.registry import load_engine
from voxbox.text import normalize_text, wer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, about 350 people attended the meeting in Chicago.",
    "Wait, are you sure? I thought the train left at noon!",
    "She bought three apples, two oranges, and a loaf of bread.",
    "Although the weather forecast had promised a calm and sunny afternoon, the sailors decided to stay in the "
    "harbor, because the old fisherman warned them that a storm was gathering beyond the hills to the west.",
    "Chapter 12 begins on page 48; read it before Friday.",
]


@pytest.fixture(scope="module")
def asr():
    engine = load_engine("faster-whisper")
    yield engine
    engine.close()


def test_normalisation():
    assert normalize_text("Wait, are you sure? I thought...") == "wait are you sure i thought"
    assert normalize_text("In 2024, 1,250 well-known people") == "in 2024 1250 well known people"


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["hibari", "piper"])
def test_tts_asr_round_trip(engine_name, asr):
    tts = load_engine(engine_name)
    scores = []
    for sentence in SENTENCES:
        t0 = time.perf_counter()
        stream = tts.stream(sentence)
        audio = stream.collect()
        tts_wall = time.perf_counter() - t0
        assert sum(stream.timings.as_dict().values()) <= tts_wall
        t0 = time.perf_counter()
        segments, info = asr.transcribe(audio, language="en")
        hyp = "".join(s.text for s in segments)
        asr_wall = time.perf_counter() - t0
        assert sum(info.timings.as_dict().values()) <= asr_wall
        scores.append(wer(sentence, hyp))
    mean = sum(scores) / len(scores)
    assert mean <= 0.10, f"{engine_name}: mean WER {mean:.3f} per sentence {scores}"
    tts.close()
