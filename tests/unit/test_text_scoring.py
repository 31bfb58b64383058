"""The one scoring normaliser and WER (voxbox.text.scoring), shared by tests, bench and convert."""

from __future__ import annotations

import pytest

from voxbox.bench import metrics
from voxbox.convert import verify
from voxbox.text import normalize_text, scoring, wer, word_errors


def test_chapter_two_is_chapter_2_everywhere() -> None:
    # issue #13: text.py, bench/metrics.py and convert/verify.py used to disagree on this pair
    assert wer("Chapter 2", "Chapter two") == 0.0
    assert metrics.wer("Chapter 2", "Chapter two") == 0.0
    assert verify.wer(["Chapter 2"], ["Chapter two"]) == 0.0
    assert metrics.wer is scoring.wer and verify.wer is scoring.wer and metrics.normalize_text is scoring.normalize_text


@pytest.mark.parametrize("a, b", [
    ("It's the Season of Light—isn't it?", "it is the season of light is not it"),
    ("$1,249.99", "one thousand two hundred forty nine dollars and ninety nine cents"),
    ("Dr. Smith", "doctor smith"),
    ("I thought...", "I thought"),
    ("The colour grey", "the color gray"),
    ("seventeen seventy six", "1776"),
])
def test_whisper_english_normaliser_semantics(a: str, b: str) -> None:
    assert normalize_text(a) == normalize_text(b)


def test_wer_counts_real_errors() -> None:
    assert wer("a b c d", "a x c") == 0.5
    assert wer(["a b", "c d"], ["a b", "c x"]) == 0.25  # corpus level
    assert wer("one", "a b c d e") == 5.0
    assert wer("one", "a b c d e", clip=True) == 1.0
    assert wer("", "") == 0.0 and wer("", "words") == 1.0
    assert word_errors("a b c", "a c") == (1, 3)
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


def test_cer() -> None:
    assert scoring.cer("hello world", "hello world") == 0.0
    assert 0 < scoring.cer("hello world", "hallo world") < 0.2
