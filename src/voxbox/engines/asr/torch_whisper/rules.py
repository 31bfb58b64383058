"""Whisper's logit rules as fixed-shape tensor operations, so a decode step that applies them can
be captured in a CUDA graph and replayed.

The rules are the reference's logit filters: suppressed tokens, blank and end-of-text suppressed
as the first token, and the timestamp rules of
:func:`voxbox.engines.asr.whisper.timestamps.apply_timestamp_rules` (pairs, monotonic, a timestamp
first and no later than ``max_initial_timestamp_index``, timestamps when their total probability
beats every text token). Everything is driven by device-side state: the token history, the index
of the last written token and of the first sampled one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from voxbox.engines.asr.whisper.tokens import WhisperTokenizer

__all__ = ["RuleTensors", "Rules", "apply_rules"]


@dataclass(frozen=True)
class Rules:
    """Logit rules for one decode (the reference's logit filters)."""

    suppress: tuple[int, ...] = ()
    begin_suppress: tuple[int, ...] = ()
    timestamps: bool = True
    max_initial_timestamp_index: int | None = 50


class RuleTensors:
    """:class:`Rules` as boolean masks over the vocabulary, on the decoding device."""

    def __init__(self, rules: Rules, tok: WhisperTokenizer, vocab: int, device: torch.device):
        self.rules = rules
        ids = torch.arange(vocab, device=device)
        self.vocab_ids = ids

        def mask(tokens: Iterable[int]) -> torch.Tensor:
            m = torch.zeros(vocab, dtype=torch.bool, device=device)
            t = [i for i in tokens if 0 <= i < vocab]
            if t:
                m[torch.tensor(t, device=device)] = True
            return m

        self.suppress = mask(rules.suppress)
        self.begin = mask(rules.begin_suppress)
        tb = tok.timestamp_begin
        self.ts_begin = tb
        self.eot = tok.eot
        self.is_ts = ids >= tb
        self.text_or_before_eot = ids < tok.eot
        first_forbidden = ids < tb
        if rules.max_initial_timestamp_index is not None:
            first_forbidden = first_forbidden | (ids > tb + rules.max_initial_timestamp_index)
        self.first_forbidden = first_forbidden | (ids == tok.no_timestamps)
        self.no_ts = mask([tok.no_timestamps])


def apply_rules(tokens: torch.Tensor, pos: torch.Tensor, begin: torch.Tensor, logits: torch.Tensor,
                rt: RuleTensors) -> torch.Tensor:
    """Rules applied to ``logits`` (B, V) of the token after ``tokens[:, pos]``.

    ``tokens`` (B, max_len): prompt then sampled tokens; ``pos`` (1,): index of the last written
    token; ``begin`` (1,): index of the first sampled token. Graph-safe (no host synchronisation).
    """
    ninf = float("-inf")
    gen = pos + 1 - begin  # (1,) tokens sampled so far
    first = gen == 0
    logits = logits.masked_fill(rt.suppress | (rt.begin & first), ninf)
    if not rt.rules.timestamps:
        return logits
    tb = rt.ts_begin
    last = tokens.index_select(1, pos).squeeze(1)
    pen = tokens.index_select(1, (pos - 1).clamp(min=0)).squeeze(1)
    last_ts = (gen >= 1) & (last >= tb)
    pen_ts = (gen < 2) | (pen >= tb)
    pair_open = last_ts & ~pen_ts
    m = (last_ts & pen_ts)[:, None] & rt.is_ts[None]
    m = m | (pair_open[:, None] & rt.text_or_before_eot[None])
    cols = torch.arange(tokens.shape[1], device=tokens.device)
    in_seq = (cols >= begin) & (cols <= pos)
    seen = torch.where(in_seq[None] & (tokens >= tb), tokens, -1).amax(1)
    ts_last = torch.where(seen >= 0, torch.where(pair_open, seen, seen + 1), tb)
    m = m | (rt.is_ts[None] & (rt.vocab_ids[None] < ts_last[:, None]))
    m = m | rt.no_ts[None] | (first & rt.first_forbidden)[None]
    logits = logits.masked_fill(m, ninf)
    lp = F.log_softmax(logits, dim=-1)
    ts_lp = lp[:, tb:].logsumexp(-1)
    max_text = lp[:, :tb].amax(-1)
    return logits.masked_fill((ts_lp > max_text)[:, None] & ~rt.is_ts[None], ninf)
