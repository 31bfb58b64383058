"""Whisper's timestamp tokens: the sampling rules, cutting a window's tokens into segments, and
clamping times to the audio.

* :func:`apply_timestamp_rules` is openai-whisper's ``ApplyTimestampRules`` on one numpy row
  (onnx-whisper). torch-whisper applies the same rules as fixed-shape tensor operations inside its
  captured decode step; a test checks the two agree.
* :func:`split_segments` is the reference long-form cut: segments end at consecutive timestamp
  tokens, text after the last complete pair is left for the next window, which starts at that
  pair's time (openai-whisper's and faster-whisper's ``seek``).
* :func:`clamp` keeps times inside the audio: a zero-padded last window lets the model place
  timestamps past the end (issue #22: a hallucinated 6.6-13.6 s segment on a 7.2 s clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxbox.engines.asr.whisper.features import FRAME_SECONDS
from voxbox.types import Word

__all__ = ["INPUT_STRIDE", "TIME_PRECISION", "Piece", "apply_timestamp_rules", "clamp", "clamp_word", "log_softmax",
           "split_segments"]

TIME_PRECISION = 0.02  # seconds per timestamp token
INPUT_STRIDE = 2  # mel frames per encoder position (and per timestamp step)


@dataclass(frozen=True)
class Piece:
    """One segment's tokens (timestamps included) and times in seconds from the audio's start."""

    start: float
    end: float
    tokens: list[int]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = np.max(x)
    return np.asarray(x - (m + np.log(np.sum(np.exp(x - m)))))


def apply_timestamp_rules(logits: np.ndarray, sampled: list[int], *, eot: int, no_timestamps: int,
                          timestamp_begin: int, max_initial_timestamp_index: int | None = 50) -> None:
    """openai-whisper's ``ApplyTimestampRules``, in place on one row of logits.

    ``sampled``: the tokens generated so far after the prompt. Timestamps come in pairs (an opened
    one must be closed, a closed pair is followed by text or the end), never go backwards, the
    first token is a timestamp no later than ``max_initial_timestamp_index`` steps, and when the
    timestamps together are more likely than any text token, a timestamp is sampled.
    """
    neg = -np.inf
    logits[no_timestamps] = neg
    last_ts = len(sampled) >= 1 and sampled[-1] >= timestamp_begin
    penultimate_ts = len(sampled) < 2 or sampled[-2] >= timestamp_begin
    if last_ts:
        if penultimate_ts:  # a pair is complete: text (or end) must follow
            logits[timestamp_begin:] = neg
        else:  # an opening timestamp must be closed (or the text ends)
            logits[:eot] = neg
    stamps = [t for t in sampled if t >= timestamp_begin]
    if stamps:
        last = stamps[-1] if (last_ts and not penultimate_ts) else stamps[-1] + 1
        logits[timestamp_begin:last] = neg  # timestamps never go backwards
    if not sampled:
        logits[:timestamp_begin] = neg  # the first token is a timestamp
        if max_initial_timestamp_index is not None:
            logits[timestamp_begin + max_initial_timestamp_index + 1 :] = neg
    lp = log_softmax(logits)
    ts_lp = lp[timestamp_begin:]
    finite = ts_lp[np.isfinite(ts_lp)]
    if finite.size:
        m = finite.max()
        ts_total = m + np.log(np.sum(np.exp(finite - m)))
        if ts_total > np.max(lp[:timestamp_begin]):
            logits[:timestamp_begin] = neg


def split_segments(tokens: list[int], timestamp_begin: int, time_offset: float, window_frames: int,
                   *, seek: bool = True) -> tuple[list[Piece], int]:
    """Cut one window's sampled tokens (no end-of-text) into segments at consecutive timestamps.

    Returns the pieces and how many mel frames of the window they consumed. With ``seek`` (the
    sequential loop) text after the last complete timestamp pair is left out and the window is
    consumed up to that pair; without it (windows decoded side by side, or when the pair is at
    0.00) that text becomes a last piece up to the window's end and the whole window is consumed.
    Without timestamp pairs the window is one piece ending at its last timestamp (or the window's
    end).
    """
    window_seconds = window_frames * FRAME_SECONDS
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(is_ts) >= 2 and is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]

    def at(token: int) -> float:
        return time_offset + (token - timestamp_begin) * TIME_PRECISION

    if not cuts:
        stamps = [t for t in tokens if t > timestamp_begin]
        end = at(stamps[-1]) if stamps else time_offset + window_seconds
        return [Piece(time_offset, end, list(tokens))], window_frames
    if single_ending:
        cuts.append(len(tokens))
    pieces, last = [], 0
    for cur in cuts:
        piece = tokens[last:cur]
        pieces.append(Piece(at(piece[0]), at(piece[-1]), piece))
        last = cur
    advance = window_frames if single_ending else (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
    tail = tokens[last:]
    if 0 < advance < window_frames and seek:
        return pieces, advance
    if any(t < timestamp_begin for t in tail):
        pieces.append(Piece(pieces[-1].end, time_offset + window_seconds, tail))
    return pieces, window_frames


def clamp(start: float, end: float, duration: float) -> tuple[float, float] | None:
    """(start, end) inside ``[0, duration]`` with end >= start, or None when the span starts at or
    after the end of the audio (such a segment is dropped)."""
    if start >= duration:
        return None
    start = max(0.0, start)
    return start, min(max(end, start), duration)


def clamp_word(start: float, end: float, word: str, probability: float | None, duration: float) -> Word:
    """A :class:`Word` with its times inside ``[0, duration]`` (rounded to the millisecond)."""
    start = min(max(start, 0.0), duration)
    end = min(max(end, start), duration)
    return Word(start=round(start, 3), end=round(end, 3), word=word, probability=probability)
