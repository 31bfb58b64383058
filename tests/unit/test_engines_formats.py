"""Transcript formatters (pure functions shared by the CLI and the server)."""

from __future__ import annotations

import json

import pytest

from voxbox.errors import BadInputError
from voxbox.formats import format_timestamp, format_transcript, transcript_dict
from voxbox.types import Segment, TranscriptionInfo, Word

SEGS = [
    Segment(id=0, start=0.0, end=2.5, text=" Hello there.", tokens=[1, 2], avg_logprob=-0.2, no_speech_prob=0.01,
            compression_ratio=1.1, temperature=0.0,
            words=[Word(0.0, 0.8, " Hello", 0.9), Word(0.9, 2.5, " there.", 0.8)]),
    Segment(id=1, start=3661.25, end=3663.0, text=" Goodbye.", tokens=[3], avg_logprob=-0.3, no_speech_prob=0.02,
            compression_ratio=0.9, temperature=0.2, words=[Word(3661.25, 3663.0, " Goodbye.", 0.7)]),
]
INFO = TranscriptionInfo(language="en", language_probability=1.0, duration=3663.4)


def test_timestamps():
    assert format_timestamp(3661.25) == "01:01:01,250"
    assert format_timestamp(0.0016, sep=".") == "00:00:00.002"


def test_text_and_json():
    assert format_transcript(SEGS, INFO, "text") == "Hello there. Goodbye.\n"
    body = json.loads(format_transcript(SEGS, INFO, "json"))
    assert body["text"] == "Hello there. Goodbye."


def test_verbose_json_shape():
    d = transcript_dict(iter(SEGS), INFO, "verbose_json", words=True)
    assert d["task"] == "transcribe" and d["language"] == "english" and d["duration"] == 3663.4
    assert d["text"] == "Hello there. Goodbye."
    seg_keys = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
                "no_speech_prob"}
    assert all(set(s) == seg_keys for s in d["segments"])
    assert d["segments"][1]["temperature"] == 0.2 and d["segments"][0]["tokens"] == [1, 2]
    assert d["words"] == [{"word": "Hello", "start": 0.0, "end": 0.8}, {"word": "there.", "start": 0.9, "end": 2.5},
                          {"word": "Goodbye.", "start": 3661.25, "end": 3663.0}]
    assert "words" not in transcript_dict(SEGS, INFO, "verbose_json")


def test_srt_vtt():
    srt = format_transcript(SEGS, INFO, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:03,000\n")
    vtt = format_transcript(SEGS, INFO, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")


def test_empty_and_unknown():
    assert format_transcript([], INFO, "text") == "\n"
    assert format_transcript([], INFO, "vtt") == "WEBVTT\n\n"
    with pytest.raises(BadInputError):
        format_transcript(SEGS, INFO, "docx")
