"""What the English engines get: clean, normalised, speakable text -- or a clear BadInputError."""

from __future__ import annotations

import numpy as np
import pytest

from voxbox.engines.registry import load_engine
from voxbox.errors import BadInputError
from voxbox.text import clean_text, speech_sentences
from voxbox.text.speech import speakable


@pytest.fixture(scope="module", params=["hibari", "piper"])
def tts(request):
    engine = load_engine(request.param)
    yield engine
    engine.close()


def test_speech_sentences_normalises_each_sentence() -> None:
    got = speech_sentences("Dr. Alice Nguyen moved to St. Louis in 1776. It cost $300!")
    assert got == [
        "Doctor Alice Nguyen moved to Saint Louis in seventeen seventy six.",
        "It cost three hundred dollars!",
    ]


def test_normalize_false_keeps_the_text() -> None:
    assert speech_sentences("It cost $300.", normalize=False) == ["It cost $300."]
    # ...but a number hibari's G2P would crash on is still read digit by digit
    assert speech_sentences("7" * 40, normalize=False) == [" ".join(["seven"] * 40)]


def test_non_english_voices_get_the_text_as_written() -> None:
    assert speech_sentences("Es kostet 300 Euro.", language="de") == ["Es kostet 300 Euro."]
    assert speech_sentences("שלום עולם", language="he") == ["שלום עולם"]


@pytest.mark.parametrize("text", ["שלום עולם, מה שלומך?", "你好，世界。", "こんにちは", "😀" * 50, "مرحبا بالعالم"])
def test_nothing_speakable_for_english(text: str) -> None:
    with pytest.raises(BadInputError) as exc:
        speech_sentences(text, language="en", engine="hibari")
    assert exc.value.param == "text"
    assert "nothing speakable for this engine/voice" in str(exc.value)


def test_mixed_scripts_keep_the_latin_part() -> None:
    assert speech_sentences("Hello 你好 world", language="en") == ["Hello world"]
    assert speakable("café", "en") and not speakable("日本", "en") and speakable("日本", "ja")


def test_clean_text_drops_what_engines_choke_on() -> None:
    assert clean_text("a\x00b\x07c") == "a b c"
    assert clean_text("left\u200fright\u202e!") == "leftright!"
    assert clean_text("bad \ud800 surrogate") == "bad  surrogate"
    assert clean_text("line\nbreak") == "line\nbreak"
    assert clean_text("ｆｕｌｌ width ½") == "full width 1⁄2"


HOSTILE = [
    "Number " + "1234567" * 6 + ".",      # 42 digits: hibari's G2P raised IndexError on 37+
    "NUL\x00 and bell\x07 inside text.",
    "lone \ud83d surrogate here",
    "😀" * 4096,
    "\u202eRTL override with English words.",
    "English then עברית then English again.",
    "1,000,000,000,000,000,000 dollars",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_speaks_or_fails_cleanly(tts, text: str) -> None:
    try:
        audio = tts.synthesize(text)
    except BadInputError as exc:
        assert exc.param in ("text", "input")
        return
    assert audio.samples.size > 0 and np.isfinite(audio.samples).all()


@pytest.mark.parametrize("text", ["שלום עולם", "你好，世界", "😀😀😀"])
def test_engines_reject_unspeakable_text_before_streaming(tts, text: str) -> None:
    with pytest.raises(BadInputError):
        tts.stream(text)


def test_normalize_option_is_checked(tts) -> None:
    with pytest.raises(BadInputError) as exc:
        tts.stream("Hello.", normalize="yes")
    assert exc.value.param == "normalize"
    a = tts.synthesize("It costs $1,249.99.", normalize=False)
    b = tts.synthesize("It costs $1,249.99.")
    assert a.samples.size > 0 and b.samples.size > 0
