"""The fish-s2 side of batching across requests: the ``Batcher`` the runtime's scheduler drives.

One :meth:`FishBatcher.step` makes one frame for every active utterance (``BatchRunner.step``,
one host read of the new tokens), then decodes the windows that are due with the codec, batched:
windows of the same shape (left context, new frames) run as one codec call. After an utterance's
first window (``first_window`` frames, for a quick first audio), windows end on multiples of
``window`` steps of the batch, so the utterances of a busy batch reach their window boundary on
the same step and share one codec call. An utterance leaves at ``<|im_end|>`` or ``max_frames``;
its row is freed at once and the next request joins at the next step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxbox.engines.batched import Piece
from voxbox.types import AudioChunk

from .batch import BatchRunner

__all__ = ["FishBatcher", "FishRequest"]

log = logging.getLogger("voxbox.engines")


@dataclass
class FishRequest:
    """A parsed call (``engine._Call`` with its prompt built) plus what batching needs."""

    call: Any
    seed: int
    prefix_key: str | None
    submitted: float


class _Seq:
    """One utterance in the batch (the scheduler's handle)."""

    def __init__(self, req: FishRequest, row: int, ncb: int) -> None:
        self.req = req
        self.row = row
        o = req.call.opts
        self.opts = o
        self.prompt_tokens = int(req.call.ids.shape[0])
        self.pos = self.prompt_tokens - 1  # the position the next step writes
        self.made = 0
        self.emitted = 0
        self.index = 0
        self.steps = 0
        self.max_batch = 0
        self.decode_s = 0.0
        self.codes = np.zeros((o.max_frames, ncb), dtype=np.int64)
        self.stop: str | None = None
        self.pending: dict[str, float] = {}
        self.pieces: list[Piece[AudioChunk]] = []
        self.details: dict[str, Any] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.pending[stage] = self.pending.get(stage, 0.0) + seconds

    def piece(self, chunk: AudioChunk | None, details: dict[str, Any]) -> None:
        self.pieces.append(Piece(chunk, self.pending, details))
        self.pending = {}


class FishBatcher:
    """Continuous batching of fish-s2 calls (see the module docstring)."""

    def __init__(self, engine: Any, slots: int, *, capture: bool = True, codec_batch: int = 16,
                 prefix_cache: int = 8) -> None:
        self.engine = engine
        self.codec = engine.codec
        self.runner = BatchRunner(engine.runner, slots, prefix_cache=prefix_cache)
        self.max_batch = self.runner.slots
        self.codec_batch = max(1, int(codec_batch))
        self.eos = engine.runner.eos
        self.ncb = engine.runner.ncb
        self.seqs: list[_Seq] = []
        self.steps = 0
        self._codec_dev = engine.placement["codec"][0]
        if capture:
            t0 = time.perf_counter()
            self.runner.capture_all()
            if self.runner.use_graphs:
                log.info("fish-s2: captured %d batch graphs in %.1f s", len(self.runner._graphs),
                         time.perf_counter() - t0)

    # ------------------------------------------------------------------ Batcher protocol
    def admit(self, requests: list[FishRequest]) -> list[_Seq]:
        t0 = time.perf_counter()
        new: list[_Seq] = []
        try:
            for req in requests:
                seq = _Seq(req, len(self.seqs), self.ncb)
                c, o = req.call, req.call.opts
                computed = self.runner.start(
                    seq.row, c.ids, c.vq_mask, c.vq_codes, top_k=o.top_k, min_frames=o.min_frames, seed=req.seed,
                    bias=o.bias, prefix_len=c.prefix_len, prefix_key=req.prefix_key,
                    opts={k: getattr(o, k) for k in ("temperature", "top_p", "repetition_penalty", "ras_temperature",
                                                      "ras_top_p", "fast_temperature", "fast_top_p")})
                seq.details["prefill_tokens"] = computed
                if req.prefix_key is not None and c.prefix_len:
                    seq.details["prefix_cache"] = "hit" if computed < seq.prompt_tokens - 1 else "miss"
                self.seqs.append(seq)
                new.append(seq)
            _sync(self.runner.device)
        except BaseException:
            for seq in reversed(new):
                self.runner.release(seq.row)
                self.seqs.pop()
            raise
        dt = time.perf_counter() - t0
        for seq in new:
            seq.add("batch_wait", max(0.0, t0 - seq.req.submitted))
            seq.add("prefill", dt)
        return new

    def step(self) -> list[tuple[_Seq, list[Piece[AudioChunk]], bool]]:
        n = len(self.seqs)
        if n == 0:
            return []
        t0 = time.perf_counter()
        out = self.runner.step(n, max(s.pos for s in self.seqs) + 1).numpy()
        dt = time.perf_counter() - t0
        self.steps += 1
        due = []
        for i, s in enumerate(self.seqs):
            s.pos += 1
            s.steps += 1
            s.max_batch = max(s.max_batch, n)
            s.decode_s += dt
            s.add("decode", dt)
            if int(out[i, 0]) == self.eos:
                s.stop = "eos"
            else:
                s.codes[s.made] = out[i, 1:]
                s.made += 1
                if s.made >= s.opts.max_frames:
                    s.stop = "max_frames"
            if s.made > s.emitted and (s.stop is not None or self._window_due(s)):
                due.append(s)
        if due:
            self._decode(due)
        results = []
        for s in self.seqs:
            if s.stop is not None:
                s.piece(None, self._final(s))
            if s.pieces:
                results.append((s, s.pieces, s.stop is not None))
                s.pieces = []
        return results

    def drop(self, handle: _Seq) -> None:
        row = handle.row
        if row >= len(self.seqs) or self.seqs[row] is not handle:
            return
        last = len(self.seqs) - 1
        if row != last:
            moved = self.seqs[last]
            self.runner.move(last, row, moved.pos)
            moved.row = row
            self.seqs[row] = moved
        else:
            self.runner.release(row)
        self.seqs.pop()

    # ------------------------------------------------------------------ windows
    def _window_due(self, s: _Seq) -> bool:
        if s.index == 0:
            return s.made - s.emitted >= s.opts.first_window
        return self.steps % s.opts.window == 0 or s.made - s.emitted >= s.opts.window

    def _decode(self, due: list[_Seq]) -> None:
        """Decode each due window (with its left context); windows of one shape share a call."""
        groups: dict[tuple[int, int], list[_Seq]] = {}
        for s in due:
            ctx = s.emitted - max(0, s.emitted - s.opts.context_frames)
            groups.setdefault((ctx, s.made - s.emitted), []).append(s)
        fl, sr = self.codec.frame_length, self.codec.sample_rate
        for (ctx, new), members in groups.items():
            for k in range(0, len(members), self.codec_batch):
                part = members[k:k + self.codec_batch]
                t0 = time.perf_counter()
                codes = np.stack([s.codes[s.emitted - ctx:s.made].T for s in part])
                audio = self.codec.decode_batch(torch.from_numpy(codes).to(self._codec_dev))
                audio = audio[:, audio.shape[1] - new * fl:].cpu().numpy()
                dt = time.perf_counter() - t0
                for s, samples in zip(part, audio):
                    s.add("codec", dt)
                    s.emitted = s.made
                    chunk = AudioChunk(np.ascontiguousarray(samples), sr, index=s.index,
                                       text=s.req.call.text if s.index == 0 else None)
                    s.index += 1
                    s.piece(chunk, {"frames": s.emitted})

    def _final(self, s: _Seq) -> dict[str, Any]:
        return {**s.details, "frames": s.emitted, "finish_reason": s.stop,
                "codes": torch.from_numpy(s.codes[:s.made].T.copy()),
                "ms_per_frame": 1000.0 * s.decode_s / max(1, s.steps), "prompt_tokens": s.prompt_tokens,
                "batched": True, "batch_size_max": s.max_batch}

    def stats(self) -> dict[str, Any]:
        r = self.runner
        return {"slots": r.slots, "active": len(self.seqs), "steps": self.steps, "graphs": len(r._graphs),
                "prefix_hits": r.prefix_hits, "prefix_misses": r.prefix_misses, "compile_error": r.compile_error}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
