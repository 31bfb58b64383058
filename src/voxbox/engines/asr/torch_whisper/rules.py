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

__all__ = ["RowRules", "RuleTensors", "Rules", "apply_rules"]


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


class RowRules:
    """Per-row :class:`RuleTensors` for a batch whose rows follow different rules (continuous
    batching: each slot holds its own request's options). Masks are (rows, V); ``timestamps`` is
    a (rows,) bool tensor. :meth:`set` copies one request's rules into its rows."""

    def __init__(self, rows: int, tok: WhisperTokenizer, vocab: int, device: torch.device):
        base = RuleTensors(Rules(), tok, vocab, device)
        self.ts_begin, self.eot = base.ts_begin, base.eot
        self.vocab_ids, self.is_ts, self.text_or_before_eot, self.no_ts = (
            base.vocab_ids, base.is_ts, base.text_or_before_eot, base.no_ts)
        self.suppress = torch.zeros(rows, vocab, dtype=torch.bool, device=device)
        self.begin = torch.zeros_like(self.suppress)
        self.first_forbidden = torch.zeros_like(self.suppress)
        self.timestamps = torch.zeros(rows, dtype=torch.bool, device=device)
        self.any_timestamps = True  # False: no selected row has timestamps (the batcher knows; skips that work)

    def set(self, rows: torch.Tensor, rt: RuleTensors) -> None:
        """One request's rules into ``rows`` ((k,) int64 device tensor): four copies, however many rows."""
        k = rows.shape[0]
        self.suppress.index_copy_(0, rows, rt.suppress.expand(k, -1))
        self.begin.index_copy_(0, rows, rt.begin.expand(k, -1))
        self.first_forbidden.index_copy_(0, rows, rt.first_forbidden.expand(k, -1))
        self.timestamps.index_fill_(0, rows, rt.rules.timestamps)

    def select(self, rows: torch.Tensor | slice, any_timestamps: bool = True) -> RowRules:
        """These rules for ``rows`` (a slice shares the tensors; an index tensor copies);
        ``any_timestamps=False`` when none of those rows (that matter) has timestamps."""
        out = object.__new__(RowRules)
        out.__dict__.update(self.__dict__)
        out.any_timestamps = any_timestamps
        out.suppress, out.begin, out.first_forbidden, out.timestamps = (
            self.suppress[rows], self.begin[rows], self.first_forbidden[rows], self.timestamps[rows])
        return out


def apply_rules(tokens: torch.Tensor, pos: torch.Tensor, begin: torch.Tensor, logits: torch.Tensor,
                rt: RuleTensors | RowRules) -> torch.Tensor:
    """Rules applied to ``logits`` (B, V) of the token after ``tokens[:, pos]``.

    ``tokens`` (B, max_len): prompt then sampled tokens; ``pos``: index of the last written
    token, ``begin``: index of the first sampled token, each (1,) (shared by every row) or (B,)
    (each row its own: continuous batching, with :class:`RowRules`). Graph-safe (no host
    synchronisation).
    """
    ninf = float("-inf")
    gen = pos + 1 - begin  # (P,) tokens sampled so far
    first = gen == 0
    logits = logits.masked_fill(rt.suppress | (rt.begin & first[:, None]), ninf)
    row_ts = rt.timestamps if isinstance(rt, RowRules) else None
    if not (rt.any_timestamps if isinstance(rt, RowRules) else rt.rules.timestamps):
        return logits
    tb = rt.ts_begin
    last = tokens.gather(1, pos.expand(tokens.shape[0])[:, None]).squeeze(1)
    pen = tokens.gather(1, (pos - 1).clamp(min=0).expand(tokens.shape[0])[:, None]).squeeze(1)
    last_ts = (gen >= 1) & (last >= tb)
    pen_ts = (gen < 2) | (pen >= tb)
    pair_open = last_ts & ~pen_ts
    m = (last_ts & pen_ts)[:, None] & rt.is_ts[None]
    m = m | (pair_open[:, None] & rt.text_or_before_eot[None])
    cols = torch.arange(tokens.shape[1], device=tokens.device)
    in_seq = (cols[None] >= begin[:, None]) & (cols[None] <= pos[:, None])
    seen = torch.where(in_seq & (tokens >= tb), tokens, -1).amax(1)
    ts_last = torch.where(seen >= 0, torch.where(pair_open, seen, seen + 1), tb)
    m = m | (rt.is_ts[None] & (rt.vocab_ids[None] < ts_last[:, None]))
    m = m | rt.no_ts[None] | (first[:, None] & rt.first_forbidden)
    if row_ts is not None:
        m = m & row_ts[:, None]
    logits = logits.masked_fill(m, ninf)
    lp = F.log_softmax(logits, dim=-1)
    ts_lp = lp[:, tb:].logsumexp(-1)
    max_text = lp[:, :tb].amax(-1)
    late = (ts_lp > max_text)[:, None] & ~rt.is_ts[None]
    if row_ts is not None:
        late = late & row_ts[:, None]
    return logits.masked_fill(late, ninf)
