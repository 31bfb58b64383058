"""Beam search bookkeeping on the host (openai-whisper's ``BeamSearchDecoder`` and
``MaximumLikelihoodRanker``): the device runs the decoder and rules, this keeps hypotheses,
finished candidates and scores."""

from __future__ import annotations

__all__ = ["BeamSearch"]


class BeamSearch:
    """Host-side bookkeeping of beam search for ``batch`` rows of ``beam`` hypotheses each."""

    def __init__(self, batch: int, beam: int, max_candidates: int, prompt: list[int], eot: int):
        self.batch, self.beam, self.max_candidates, self.eot = batch, beam, max_candidates, eot
        self.seqs: list[list[int]] = [list(prompt) for _ in range(batch * beam)]
        self.sum_lp = [0.0] * (batch * beam)
        self.done_seqs: list[dict[tuple[int, ...], float]] = [{} for _ in range(batch)]
        self.done = [False] * batch

    @property
    def finished(self) -> bool:
        return all(self.done)

    def step(self, top_lp: list[list[float]], top_id: list[list[int]]) -> list[int]:
        """Extend every hypothesis by its top tokens, keep the ``beam`` best per row; returns the
        source hypothesis of each new one (to reorder the KV cache)."""
        seqs, sum_lp, source = [], [], []
        for i in range(self.batch):
            rows = range(i * self.beam, (i + 1) * self.beam)
            if self.done[i]:  # keep the rows busy with a harmless continuation
                seqs += [self.seqs[r] + [self.eot] for r in rows]
                sum_lp += [self.sum_lp[r] for r in rows]
                source += list(rows)
                continue
            scores: dict[tuple[int, ...], tuple[float, int]] = {}
            for r in rows:
                for lpv, t in zip(top_lp[r], top_id[r], strict=True):
                    key = (*self.seqs[r], t)
                    scores[key] = (self.sum_lp[r] + lpv, r)
            kept = 0
            for seq, (score, r) in sorted(scores.items(), key=lambda kv: kv[1][0], reverse=True):
                if seq[-1] == self.eot:
                    if len(self.done_seqs[i]) < self.max_candidates:
                        self.done_seqs[i][seq] = score
                    continue
                seqs.append(list(seq))
                sum_lp.append(score)
                source.append(r)
                kept += 1
                if kept == self.beam:
                    break
            self.done[i] = len(self.done_seqs[i]) >= self.max_candidates
        self.seqs, self.sum_lp = seqs, sum_lp
        return source

    def best(self, n0: int, length_penalty: float | None) -> list[tuple[list[int], float]]:
        """(tokens after the prompt, sum of log-probs) of the best hypothesis per row."""
        out = []
        for i in range(self.batch):
            cands = dict(self.done_seqs[i])
            if len(cands) < self.max_candidates:
                for r in range(i * self.beam, (i + 1) * self.beam):
                    cands.setdefault(tuple(self.seqs[r]), self.sum_lp[r])

            def score(item: tuple[tuple[int, ...], float]) -> float:
                n = len([t for t in item[0][n0:] if t != self.eot])
                pen = max(n, 1) if length_penalty is None else ((5 + n) / 6) ** length_penalty
                return item[1] / pen

            seq, s = max(cands.items(), key=score)
            out.append(([t for t in seq[n0:] if t != self.eot], s))
        return out
