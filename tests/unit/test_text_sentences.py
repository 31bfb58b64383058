"""Sentence splitting for streaming TTS: real sentence ends only (issue #22 item 13)."""

from __future__ import annotations

import pytest

from voxbox.engines.base import split_sentences as from_base
from voxbox.text import split_sentences


@pytest.mark.parametrize("text, expected", [
    ("Dr. Alice Nguyen moved to St. Louis in 1776. She likes it.",
     ["Dr. Alice Nguyen moved to St. Louis in 1776.", "She likes it."]),
    ("Mr. and Mrs. Smith met Prof. Lee.", ["Mr. and Mrs. Smith met Prof. Lee."]),
    ("She met J. K. Rowling today. Then she left!", ["She met J. K. Rowling today.", "Then she left!"]),
    ("The U.S. Army came. It rained.", ["The U.S. Army came.", "It rained."]),
    ("Bring fruit, e.g. Apples or pears.", ["Bring fruit, e.g. Apples or pears."]),
    ("It costs 3.50 dollars. Pi is 3.14.", ["It costs 3.50 dollars.", "Pi is 3.14."]),
    ("We meet at 3:30 p.m. on Friday.", ["We meet at 3:30 p.m. on Friday."]),
    ("We meet at 3 p.m. Then we eat.", ["We meet at 3 p.m.", "Then we eat."]),
    ("Visit example.org. It is free.", ["Visit example.org.", "It is free."]),
    ("It weighs approx. 5 kg. Lift it.", ["It weighs approx. 5 kg.", "Lift it."]),
    ("Really? Yes! \"Good.\" Done.", ["Really?", "Yes!", "\"Good.\"", "Done."]),
    ("No. That is wrong.", ["No.", "That is wrong."]),
    ("First paragraph\n\nSecond paragraph", ["First paragraph", "Second paragraph"]),
    ("Wait... What happened?", ["Wait...", "What happened?"]),
])
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_issue_example_is_not_cut_after_abbreviations() -> None:
    got = split_sentences("Dr. Alice Nguyen moved to St. Louis last year.")
    assert got == ["Dr. Alice Nguyen moved to St. Louis last year."]


def test_long_sentences_are_cut_at_commas() -> None:
    text = ", ".join(["word " * 10] * 10)
    parts = split_sentences(text, max_chars=120)
    assert all(len(p) <= 120 for p in parts) and len(parts) > 1
    assert " ".join(parts).split() == text.split()


def test_base_re_exports_the_splitter() -> None:
    assert from_base is split_sentences
