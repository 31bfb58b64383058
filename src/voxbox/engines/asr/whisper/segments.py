"""From decoded windows to :class:`~voxbox.types.Segment`: the quality checks that trigger a
temperature fallback or skip silence, the sequential long-form loop, and segment building (cut at
timestamps, clamped to the audio, empty text dropped).

Runtime-neutral: a backend supplies ``decode(seek, frames, previous) -> DecodeResult`` for one
30-second window and this module does the rest, as openai-whisper's ``transcribe`` does.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from voxbox.engines.asr.whisper.features import CHUNK_FRAMES, FRAME_SECONDS
from voxbox.engines.asr.whisper.timestamps import (
    Piece,
    clamp,
    clamp_word,
    split_segments,
)
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.types import Segment, Word

__all__ = ["DecodeResult", "WordTimestamps", "compression_ratio", "is_silence", "needs_fallback",
           "sequential_segments", "window_segments"]

#: ``(pieces, backend context, window offset s, window frames) -> (pieces with edges moved to the
#: words, words per piece)``: :class:`voxbox.engines.asr.whisper.alignment.WordAligner`.
WordTimestamps = Callable[[list[Piece], Any, float, int], tuple[list[Piece], list[list[Word]]]]


@dataclass
class DecodeResult:
    """One decoded window: sampled tokens (no prompt, no end-of-text) and their scores."""

    tokens: list[int]
    sum_logprob: float
    no_speech_prob: float | None = None
    temperature: float = 0.0
    context: Any = None  # the backend's data for word alignment (its encoder output for the window)

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)


def compression_ratio(text: str) -> float:
    """gzip ratio of the text: above ~2.4 the decoder is repeating itself."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else 0.0


def is_silence(r: DecodeResult, no_speech_threshold: float | None, log_prob_threshold: float | None) -> bool:
    """openai-whisper's skip rule: likely no speech, unless the text is confident anyway."""
    if no_speech_threshold is None or r.no_speech_prob is None or r.no_speech_prob <= no_speech_threshold:
        return False
    return not (log_prob_threshold is not None and r.avg_logprob > log_prob_threshold)


def needs_fallback(r: DecodeResult, text: str, *, compression_ratio_threshold: float | None,
                   log_prob_threshold: float | None, no_speech_threshold: float | None) -> bool:
    """Decode again at the next temperature: the text repeats or is unlikely (but not silence)."""
    bad = compression_ratio_threshold is not None and compression_ratio(text) > compression_ratio_threshold
    bad |= log_prob_threshold is not None and r.avg_logprob < log_prob_threshold
    if no_speech_threshold is not None and r.no_speech_prob is not None and r.no_speech_prob > no_speech_threshold:
        return False  # silence: keep it, it will be skipped
    return bad


def window_segments(tok: WhisperTokenizer, r: DecodeResult, *, offset: float, window_frames: int, duration: float,
                    timestamps: bool, seek: bool, first_id: int, words: WordTimestamps | None = None
                    ) -> tuple[list[Segment], list[int], int]:
    """(segments, their tokens, mel frames consumed) for one decoded window.

    As the reference loops: pieces without text or without duration are not segments; with word
    timestamps, segment edges follow the words and, unless the window ended on a single timestamp,
    the next window starts at the last word's end. Then times are clamped to ``duration`` and
    segments starting at or after the end of the audio are dropped (their tokens still count as
    previous text).
    """
    if timestamps:
        pieces, advance = split_segments(r.tokens, tok.timestamp_begin, offset, window_frames, seek=seek)
    else:
        pieces, advance = [Piece(offset, offset + window_frames * FRAME_SECONDS, list(r.tokens))], window_frames
    tb = tok.timestamp_begin
    single_ending = timestamps and len(r.tokens) >= 2 and r.tokens[-2] < tb <= r.tokens[-1]
    word_lists: list[list[Word]] | None = None
    if words is not None and pieces:
        pieces, word_lists = words(pieces, r.context, offset, window_frames)
        ends = [w.end for ws in word_lists for w in ws] or [pieces[-1].end]
        if seek and not single_ending and ends[-1] > offset:
            advance = max(1, round(ends[-1] / FRAME_SECONDS) - round(offset / FRAME_SECONDS))
    ratio = compression_ratio(tok.decode(r.tokens))
    out: list[Segment] = []
    consumed: list[int] = []
    for i, piece in enumerate(pieces):
        text = tok.decode(piece.tokens)
        if not text.strip() or piece.start == piece.end:
            continue
        consumed += piece.tokens
        span = clamp(piece.start, piece.end, duration)
        if span is None:
            continue
        seg_words = None
        if word_lists is not None:
            seg_words = [clamp_word(w.start, w.end, w.word, w.probability, duration) for w in word_lists[i]]
        out.append(Segment(id=first_id + len(out), start=round(span[0], 3), end=round(span[1], 3), text=text,
                           words=seg_words, tokens=list(piece.tokens), avg_logprob=r.avg_logprob,
                           no_speech_prob=r.no_speech_prob, compression_ratio=ratio, temperature=r.temperature))
    return out, consumed, advance


def sequential_segments(tok: WhisperTokenizer, decode: Callable[[int, int, list[int]], DecodeResult], *,
                        content_frames: int, duration: float, timestamps: bool, condition_on_previous_text: bool,
                        prompt: Sequence[int] = (), no_speech_threshold: float | None = None,
                        log_prob_threshold: float | None = None, words: WordTimestamps | None = None
                        ) -> Iterator[Segment]:
    """openai-whisper's long-form loop: decode the 30 s window at ``seek``, emit its segments,
    seek to the last complete timestamp, and condition the next window on the text so far
    (``prompt`` first) unless told not to or the window needed a high temperature.

    ``decode(seek, frames, previous)`` decodes ``frames`` mel frames from ``seek`` after the
    ``previous`` tokens.
    """
    previous = list(prompt)
    reset, seek, seg_id = 0, 0, 0
    while seek < content_frames:
        size = min(CHUNK_FRAMES, content_frames - seek)
        r = decode(seek, size, previous[reset:])
        if is_silence(r, no_speech_threshold, log_prob_threshold):
            seek += size
            continue
        segs, consumed, advance = window_segments(tok, r, offset=seek * FRAME_SECONDS, window_frames=size,
                                                  duration=duration, timestamps=timestamps, seek=True,
                                                  first_id=seg_id, words=words)
        yield from segs
        seg_id += len(segs)
        seek += advance
        previous += consumed
        if not condition_on_previous_text or r.temperature > 0.5:
            reset = len(previous)
