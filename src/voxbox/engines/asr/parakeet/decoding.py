"""Greedy decoding for NeMo FastConformer heads, batched, and tokens -> words.

TDT (token-and-duration transducer): at each step the joint network scores the vocabulary (blank
last) and the durations; a non-blank token is emitted at the current encoder frame and the
prediction network's state moves on; the frame index advances by the predicted duration
(a blank with duration 0 advances by 1, and so does the ``max_symbols``-th token in a row on one
frame). RNN-T is the same walk without durations. The walk runs for the whole batch at once:
each step calls the decoder/joint graph on the items still inside their audio, so a batch of B
windows costs about as many graph calls as its longest item instead of B times as many.

CTC: per-frame argmax, repeats merged, blanks dropped.

Token times: the frame a token was emitted on (× frame seconds); its end is the frame plus its
duration (TDT, at least one frame) or the next token's frame (RNN-T/CTC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxbox.types import CancelToken, Word

__all__ = ["Hypothesis", "Vocab", "ctc_greedy", "transducer_greedy", "words_of"]

SPACE = "\u2581"


@dataclass
class Hypothesis:
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)


class Vocab:
    """``vocab.txt`` as onnx-asr reads it: one ``token id`` per line; ``<blk>`` is the blank."""

    def __init__(self, pieces: dict[int, str]) -> None:
        self.pieces = pieces
        self.size = len(pieces)
        self.blank = next((i for i, t in pieces.items() if t == "<blk>"), self.size - 1)

    @classmethod
    def from_file(cls, text: str) -> Vocab:
        pieces: dict[int, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            token, _, idx = line.rstrip("\n").rpartition(" ")
            pieces[int(idx)] = token
        return cls(pieces)

    def special(self, i: int) -> bool:
        t = self.pieces.get(i, "")
        return t.startswith("<") and t.endswith(">")

    def text(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids if not self.special(i)).replace(SPACE, " ").strip()


StepFn = Callable[[np.ndarray, np.ndarray, Any], tuple[np.ndarray, Any]]
"""(encoder frames [b, D], previous tokens [b], state for those b) -> (joint output [b, K], new state)."""


def transducer_greedy(step: StepFn, enc: np.ndarray, lengths: np.ndarray, *, blank: int, vocab_size: int,
                      durations: list[int] | None, max_symbols: int, init_state: Callable[[int], Any],
                      take: Callable[[Any, np.ndarray], Any], put: Callable[[Any, np.ndarray, Any], None],
                      cancel: CancelToken | None = None) -> list[Hypothesis]:
    """Batched greedy TDT/RNN-T over ``enc`` [B, T, D] with valid ``lengths`` [B].

    ``take(state, idx)`` selects items of a batched state and ``put(state, idx, new)`` writes them back,
    so the state layout stays the graph's business."""
    batch = enc.shape[0]
    hyps = [Hypothesis() for _ in range(batch)]
    t = np.zeros(batch, dtype=np.int64)
    emitted = np.zeros(batch, dtype=np.int64)
    last = np.full(batch, blank, dtype=np.int64)
    state = init_state(batch)
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), enc.shape[1])
    steps = 0
    while True:
        idx = np.flatnonzero(t < lengths)
        if idx.size == 0:
            return hyps
        steps += 1
        if cancel is not None and steps % 32 == 0:
            cancel.check()
        out, new_state = step(enc[idx, t[idx]], last[idx], take(state, idx))
        tokens = out[:, :vocab_size].argmax(axis=1)
        if durations:
            skip = np.asarray(durations, dtype=np.int64)[out[:, vocab_size:vocab_size + len(durations)].argmax(axis=1)]
        else:
            skip = np.zeros(idx.size, dtype=np.int64)
        emit = tokens != blank
        if emit.any():
            sel = idx[emit]
            put(state, sel, take(new_state, np.flatnonzero(emit)))
            last[sel] = tokens[emit]
            emitted[sel] += 1
            for i, tok, d in zip(sel.tolist(), tokens[emit].tolist(), skip[emit].tolist(), strict=True):
                hyps[i].tokens.append(int(tok))
                hyps[i].frames.append(int(t[i]))
                hyps[i].durations.append(int(d))
        move = skip > 0
        stay_blank = ~move & (~emit | (emitted[idx] >= max_symbols))
        t[idx[move]] += skip[move]
        t[idx[stay_blank]] += 1
        emitted[idx[move | stay_blank]] = 0


def ctc_greedy(logprobs: np.ndarray, lengths: np.ndarray, blank: int) -> list[Hypothesis]:
    """Greedy CTC over ``logprobs`` [B, T, V]."""
    best = logprobs.argmax(axis=-1)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])]
        keep = (seq != blank) & (np.diff(seq, prepend=blank) != 0)
        frames = np.flatnonzero(keep)
        out.append(Hypothesis(tokens=seq[frames].tolist(), frames=frames.tolist(), durations=[]))
    return out


def words_of(hyp: Hypothesis, vocab: Vocab, frame_s: float, offset_s: float = 0.0) -> list[Word]:
    """Words from a hypothesis: a ``▁`` before a letter or digit opens a word; a ``▁`` before
    punctuation is dropped (the mark joins the word before it, as SentencePiece text decoding does)."""
    words: list[Word] = []
    text, start, end = "", 0.0, 0.0
    space = False
    n = len(hyp.tokens)
    for k, (tok, frame) in enumerate(zip(hyp.tokens, hyp.frames, strict=True)):
        if vocab.special(tok):
            continue
        piece = vocab.pieces[tok]
        t0 = offset_s + frame * frame_s
        if hyp.durations:
            t1 = offset_s + (frame + max(1, hyp.durations[k])) * frame_s
        else:
            nxt = hyp.frames[k + 1] if k + 1 < n else frame + 1
            t1 = offset_s + max(frame + 1, nxt) * frame_s
        body = piece.replace(SPACE, "")
        space = space or piece.startswith(SPACE)
        if not body:
            continue
        if (space and (body[0].isalnum() or body[0] == "_")) or not text:
            if text:
                words.append(Word(start=round(start, 3), end=round(end, 3), word=text))
            text, start, end = "", t0, t1
        space = False
        text += body
        end = max(end, t1)
    if text:
        words.append(Word(start=round(start, 3), end=round(end, 3), word=text))
    return words
