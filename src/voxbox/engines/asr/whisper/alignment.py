"""Word-level timestamps from cross-attention, as openai-whisper and CTranslate2 (faster-whisper)
compute them.

A few decoder cross-attention heads (the checkpoint's ``alignment_heads``) follow the audio
monotonically. For one decoded window the backend runs the decoder over ``sot sequence +
<|notimestamps|> + text tokens + <|endoftext|>`` and hands over those heads' attention *scores*
(before the softmax) and the probability of each text token. Here the scores are cut to the
window's content, turned into probabilities, normalised per frame across tokens, median-filtered
over time and averaged over heads; dynamic time warping then finds the monotonic token-to-frame
path, and a word starts where the path reaches its first token. faster-whisper's post-processing
follows: overlong words at sentence ends are trimmed, punctuation is merged into its word, the words
are shared out to the window's segments, and segment edges move to the words (or words to the
segment edges when a word runs far past them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voxbox.engines.asr.whisper.timestamps import Piece
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.types import Word

__all__ = ["APPEND_PUNCTUATIONS", "MEDIAN_FILTER_WIDTH", "PREPEND_PUNCTUATIONS", "WordAligner", "WordTiming",
           "dtw", "find_alignment", "median_filter", "merge_punctuations"]

MEDIAN_FILTER_WIDTH = 7
FRAMES_PER_SECOND = 50  # encoder positions (20 ms each)
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
_SENTENCE_END = ".。!！?？"

#: ``(backend context, tokens) -> (scores, next-token probabilities)``: ``scores`` (heads,
#: len(tokens), frames) are the alignment heads' cross-attention scores before the softmax;
#: ``probs[p]`` (len(tokens) - 1) is the probability of ``tokens[p + 1]`` after ``tokens[:p + 1]``
#: among the text tokens (0 for special tokens).
Scorer = Callable[[Any, list[int]], tuple[np.ndarray, np.ndarray]]


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of odd ``width`` along the last axis, reflect-padded (no
    filtering when the axis is too short to reflect)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic path through ``cost`` (rows: tokens, columns: frames) from the first
    cell to the last, moving diagonally, down or right; returns (row indices, column indices).

    Each row is filled in one vectorised pass: with ``a[j]`` the best of the diagonal and upper
    neighbours and ``s`` the running sum of the row's costs, the left-move recurrence
    ``D[j] = cost[j] + min(a[j], D[j-1])`` is ``s[j] + cummin(a[k] - s[k-1])``. Ties go right, then
    down, as in openai-whisper's and CTranslate2's loops.
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), 2, dtype=np.int8)  # 0 diagonal, 1 down, 2 right
    for i in range(1, n + 1):
        diag, up = acc[i - 1, :-1], acc[i - 1, 1:]
        best = np.minimum(diag, up)
        s = np.cumsum(cost[i - 1].astype(np.float64))
        prev_s = np.concatenate(([0.0], s[:-1]))
        row = s + np.minimum.accumulate(best - prev_s)
        acc[i, 1:] = row
        left = acc[i, :-1]
        trace[i, 1:] = np.where(left <= best, 2, np.where(diag < up, 0, 1))
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    rows, cols = np.array(path[::-1]).T
    return rows, cols


def find_alignment(tok: WhisperTokenizer, text_tokens: list[int], scores: np.ndarray, token_probs: np.ndarray,
                   num_frames: int, sot_length: int, language: str | None,
                   width: int = MEDIAN_FILTER_WIDTH) -> list[WordTiming]:
    """Words of ``text_tokens`` with start/end seconds (from the window's start) and probability.

    ``scores``: (heads, sot_length + 1 + len(text_tokens) + 1, frames) alignment-head scores;
    ``num_frames``: the window's mel frames of content (two per encoder position).
    """
    if not text_tokens:
        return []
    frames = max(1, min(num_frames // 2, scores.shape[-1]))
    w = scores[..., :frames].astype(np.float32)
    w = np.exp(w - w.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    mean, std = w.mean(axis=-2, keepdims=True), w.std(axis=-2, keepdims=True)
    w = (w - mean) / np.where(std > 0, std, 1.0)
    matrix = median_filter(w, width).mean(axis=0)[sot_length:-1]  # rows: <|notimestamps|>, text...
    rows, cols = dtw(-matrix)
    words, word_tokens = tok.split_words([*text_tokens, tok.eot], language)
    if len(word_tokens) <= 1:
        return []
    bounds = np.concatenate(([0], np.cumsum([len(t) for t in word_tokens[:-1]])))
    jumps = np.concatenate(([True], np.diff(rows) != 0))
    jump_times = cols[jumps] / FRAMES_PER_SECOND
    out = []
    for k, (word, toks) in enumerate(zip(words[:-1], word_tokens[:-1], strict=True)):
        a, b = int(bounds[k]), int(bounds[k + 1])
        out.append(WordTiming(word, list(toks), float(jump_times[a]), float(jump_times[b]),
                              float(np.mean(token_probs[a:b]))))
    return out


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Opening punctuation joins the next word, closing punctuation the previous one (in place;
    the absorbed entries keep their times but lose word and tokens)."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word = previous.word + following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


def _trim_sentence_ends(alignment: list[WordTiming]) -> tuple[float, float]:
    """(median, max) word duration; words at sentence ends are cut to the max."""
    durations = np.array([w.end - w.start for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > longest:
                if alignment[i].word in _SENTENCE_END:
                    alignment[i].end = alignment[i].start + longest
                elif alignment[i - 1].word in _SENTENCE_END:
                    alignment[i].start = alignment[i].end - longest
    return median, longest


@dataclass
class WordAligner:
    """Word timestamps for the windows of one call (it keeps where speech last ended).

    ``score``: the backend's :data:`Scorer`; ``sot_sequence``: the call's start-of-transcript
    tokens (the alignment pass has no previous-text prompt).
    """

    tok: WhisperTokenizer
    score: Scorer
    sot_sequence: Sequence[int]
    language: str | None
    prepend: str = PREPEND_PUNCTUATIONS
    append: str = APPEND_PUNCTUATIONS
    last_speech: float = 0.0

    def __call__(self, pieces: list[Piece], context: Any, offset: float, window_frames: int
                 ) -> tuple[list[Piece], list[list[Word]]]:
        """The window's pieces with their edges moved to the words, and each piece's words."""
        per_piece = [[t for t in p.tokens if t < self.tok.eot] for p in pieces]
        text = [t for toks in per_piece for t in toks]
        if not text:
            return pieces, [[] for _ in pieces]
        seq = [*self.sot_sequence, self.tok.no_timestamps, *text, self.tok.eot]
        scores, probs = self.score(context, seq)
        n_sot = len(self.sot_sequence)
        alignment = find_alignment(self.tok, text, scores, probs[n_sot : n_sot + len(text)], window_frames, n_sot,
                                   self.language)
        median, longest = _trim_sentence_ends(alignment)
        merge_punctuations(alignment, self.prepend, self.append)
        out_pieces, out_words, k = [], [], 0
        last = self.last_speech
        for piece, toks in zip(pieces, per_piece, strict=True):
            words, saved = [], 0
            while k < len(alignment) and saved < len(toks):
                t = alignment[k]
                if t.word:
                    words.append(Word(start=round(offset + t.start, 2), end=round(offset + t.end, 2), word=t.word,
                                      probability=t.probability))
                saved += len(t.tokens)
                k += 1
            piece, last = _fit(piece, words, median, longest, last)
            out_pieces.append(piece)
            out_words.append(words)
        ends = [w.end for ws in out_words for w in ws]
        self.last_speech = ends[-1] if ends else (out_pieces[-1].end if out_pieces else self.last_speech)
        return out_pieces, out_words


def _fit(piece: Piece, words: list[Word], median: float, longest: float, last_speech: float
         ) -> tuple[Piece, float]:
    """faster-whisper's edge rules: a first word after a pause is cut to a plausible length, the
    segment takes its edges from the words unless a word runs 0.5 s past them. ``words`` is
    changed in place; returns the piece and where speech last ended."""
    if not words:
        return piece, last_speech
    start, end = piece.start, piece.end
    first = words[0]
    if first.end - last_speech > median * 4 and (
            first.end - first.start > longest or (len(words) > 1 and words[1].end - first.start > longest * 2)):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            boundary = max(words[1].end / 2, words[1].end - longest)
            words[0] = first = replace(first, end=boundary)
            words[1] = replace(words[1], start=boundary)
        words[0] = first = replace(first, start=max(0.0, first.end - longest))
    if start < first.end and start - 0.5 > first.start:
        words[0] = replace(first, start=max(0.0, min(first.end - median, start)))
    else:
        start = first.start
    lastw = words[-1]
    if end > lastw.start and end + 0.5 < lastw.end:
        words[-1] = replace(lastw, end=max(lastw.start + median, end))
    else:
        end = lastw.end
    return Piece(start, end, piece.tokens), end
