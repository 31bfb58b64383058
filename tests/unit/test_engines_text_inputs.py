"""Any text either becomes speech or a BadInputError(param="text") — never another exception
(issue #12, part 3): hibari's G2P on 37+ digit numbers, piper/espeak on NUL, encoders on lone
surrogates, and the shared character rules of ``validate_text``."""

from __future__ import annotations

import numpy as np
import pytest

from voxbox.engines.base import sentence_errors, validate_speed, validate_text
from voxbox.engines.registry import load_engine
from voxbox.errors import BadInputError, ModelLoadError, VoxboxError

# --------------------------------------------------------------------------------------------
# validate_text: one rule for every engine


@pytest.mark.parametrize("text,code,pos", [
    ("hello\x00world", "U+0000", 5), ("\x00" * 10, "U+0000", 0), ("he\x1b[31mllo", "U+001B", 2),
    ("a\x7fb", "U+007F", 1), ("ab\x9b", "U+009B", 2), ("hello \ud800 world", "U+D800", 6), ("\udfffabc", "U+DFFF", 0),
])
def test_control_characters_and_surrogates_refused_with_position(text, code, pos):
    with pytest.raises(BadInputError) as ei:
        validate_text(text)
    msg = str(ei.value)
    assert ei.value.param == "text" and code in msg and f"position {pos}" in msg


def test_whitespace_and_format_characters_allowed():
    text = "a\tb\nc\rd\x0be\x0cf\x85g\u2028h \u200d\u200b\u202e\ufeff z"
    assert validate_text(f"  {text}  ") == text
    assert validate_text("\U0001F468\u200d\U0001F469 family") == "\U0001F468\u200d\U0001F469 family"


def test_speed_overflow_is_bad_input():
    with pytest.raises(BadInputError) as ei:
        validate_speed(10**400)
    assert ei.value.param == "speed" and len(str(ei.value)) < 120


# --------------------------------------------------------------------------------------------
# sentence_errors: the conversion at the backend boundary


def test_sentence_errors_converts_backend_exceptions():
    with pytest.raises(BadInputError) as ei, sentence_errors("demo", "1" * 80, "phonemize"):
        raise IndexError("list index out of range")
    assert isinstance(ei.value.__cause__, IndexError)
    assert ei.value.param == "text" and "demo could not phonemize" in str(ei.value)
    assert "list index" not in str(ei.value)  # backend messages stay in the log
    assert len(str(ei.value)) < 220
    with pytest.raises(ModelLoadError), sentence_errors("demo", "x", "synthesize"):  # voxbox errors pass through
        raise ModelLoadError("broken")
    with pytest.raises(MemoryError), sentence_errors("demo", "x", "synthesize"):
        raise MemoryError


# --------------------------------------------------------------------------------------------
# the bundled engines on every hostile text


@pytest.fixture(scope="module", params=["hibari", "piper"])
def tts(request):
    engine = load_engine(request.param)
    yield engine
    engine.close()


def test_hostile_texts_speak_or_refuse(tts, hostile_texts):
    spoken, refused = [], []
    for name, text in hostile_texts.items():
        try:
            audio = tts.synthesize(text)
        except BadInputError as exc:
            assert exc.param == "text", (name, exc)
            assert "\n" not in str(exc)
            refused.append(name)
        except VoxboxError as exc:  # pragma: no cover - the failure message names the case
            pytest.fail(f"{tts.info.name} {name}: {type(exc).__name__} {exc}")
        else:
            assert audio.samples.dtype == np.float32 and np.all(np.isfinite(audio.samples)), name
            spoken.append(name)
    # the rules every engine shares refuse the same inputs
    for name in ("nul", "only-nul", "escape-sequence", "del-and-c1", "lone-surrogate", "lone-low-surrogate",
                 "emoji-4096"):
        assert name in refused, (tts.info.name, name)
    assert {"zero-width", "whitespace-controls", "emoji-zwj", "bidi-overrides"} <= set(spoken)
    assert "rtl" in refused  # Arabic/Hebrew into an English voice: "nothing speakable", not silence


def test_hibari_long_number_is_a_clear_4xx():
    """hibari's G2P raises IndexError on numbers of 37+ digits (upstream bug): the engine must turn
    it into a BadInputError naming the sentence (or speak it, once a normaliser spells it out)."""
    engine = load_engine("hibari")
    try:
        engine.synthesize("Call 1234567890123456789012345678901234567890 now.")
    except BadInputError as exc:
        assert exc.param == "text" and "1234567890" in str(exc)
        assert exc.__cause__ is not None
    finally:
        engine.close()


def test_piper_nul_is_refused_before_espeak():
    engine = load_engine("piper")
    with pytest.raises(BadInputError) as ei:
        engine.stream("hello\x00world")  # refused eagerly, not inside the stream
    assert "U+0000" in str(ei.value)
    engine.close()


def test_piper_phoneme_groups_are_cut_at_word_boundaries():
    from voxbox.engines.tts.piper import split_phonemes

    group = list("ab cd ef gh ij kl")
    pieces = split_phonemes(group, 6)
    assert [len(p) for p in pieces] == [6, 6, 5] and [x for p in pieces for x in p] == group
    assert all(p[-1] == " " for p in pieces[:-1])  # cut after a word
    assert split_phonemes(list("abcdefghijk"), 4) == [list("abcd"), list("efgh"), list("ijk")]  # no spaces: hard cut
    assert split_phonemes(group, 100) == [group]


def test_piper_long_spelled_sentence_streams_in_bounded_pieces():
    """espeak spells unknown words letter by letter (and reads emoji or Han characters out by name in
    other voices): one 380-character 'sentence' of them is several calls, not one huge one."""
    engine = load_engine("piper")
    text = " ".join(["xzq"] * 95)
    chunks = list(engine.stream(text))
    assert len(chunks) >= 2 and {c.text for c in chunks} == {text}
    assert max(c.duration for c in chunks) < 40
    engine.close()
