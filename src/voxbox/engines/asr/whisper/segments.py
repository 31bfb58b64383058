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

from voxbox.engines.asr.whisper.features import CHUNK_FRAMES, FRAME_SECONDS
from voxbox.engines.asr.whisper.timestamps import (
    Piece,
    clamp,
    clamp_word,
    split_segments,
)
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.types import Segment, Word

__all__ = ["DecodeResult", "WordAligner", "compression_ratio", "is_silence", "needs_fallback", "sequential_segments",
           "window_segments"]

#: ``(pieces, window result, window offset in seconds) -> words per piece`` (word-level timestamps).
WordAligner = Callable[[list[Piece], "DecodeResult", float], list[list[Word]]]


@dataclass
class DecodeResult:
    """One decoded window: sampled tokens (no prompt, no end-of-text) and their scores."""

    tokens: list[int]
    sum_logprob: float
    no_speech_prob: float | None = None
    temperature: float = 0.0

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
                    timestamps: bool, seek: bool, first_id: int, words: WordAligner | None = None
                    ) -> tuple[list[Segment], list[int], int]:
    """(segments, tokens of the window's pieces, mel frames consumed) for one decoded window.

    Times are clamped to ``duration``; pieces without text, or starting at or after the end of the
    audio, are not segments (their tokens still count as previous text).
    """
    if timestamps:
        pieces, advance = split_segments(r.tokens, tok.timestamp_begin, offset, window_frames, seek=seek)
    else:
        pieces, advance = [Piece(offset, offset + window_frames * FRAME_SECONDS, list(r.tokens))], window_frames
    ratio = compression_ratio(tok.decode(r.tokens))
    texts = [tok.decode(p.tokens) for p in pieces]
    keep = [(p, t) for p, t in zip(pieces, texts, strict=True) if t.strip() and clamp(p.start, p.end, duration)]
    aligned = words([p for p, _ in keep], r, offset) if words is not None and keep else None
    out: list[Segment] = []
    for i, (piece, text) in enumerate(keep):
        start, end = clamp(piece.start, piece.end, duration) or (duration, duration)
        seg_words = None
        if aligned is not None:
            seg_words = [clamp_word(w.start, w.end, w.word, w.probability, duration) for w in aligned[i]]
        out.append(Segment(id=first_id + len(out), start=round(start, 3), end=round(end, 3), text=text,
                           words=seg_words, tokens=list(piece.tokens), avg_logprob=r.avg_logprob,
                           no_speech_prob=r.no_speech_prob, compression_ratio=ratio, temperature=r.temperature))
    return out, [t for p in pieces for t in p.tokens], advance


def sequential_segments(tok: WhisperTokenizer, decode: Callable[[int, int, list[int]], DecodeResult], *,
                        content_frames: int, duration: float, timestamps: bool, condition_on_previous_text: bool,
                        prompt: Sequence[int] = (), no_speech_threshold: float | None = None,
                        log_prob_threshold: float | None = None, words: WordAligner | None = None
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
