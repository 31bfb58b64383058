"""The fish-s2 side of batching across requests: the ``Batcher`` the runtime's scheduler drives.

One :meth:`FishBatcher.step` makes one frame for every active utterance (``BatchRunner.step``,
one host read of the new tokens), then decodes up to ``codec_batch`` queued windows with the
codec: windows of the same shape (left context, new frames) run as one codec call. After an
utterance's first window (``first_window`` frames, for a quick first audio), windows end on
multiples of ``window`` steps of the batch, so the utterances of a busy batch reach their window
boundary on the same step and share codec calls. First and last windows jump the queue. An
utterance stops at ``<|im_end|>`` or ``max_frames``: its row is freed at once (the next request
joins at the next step) and it finishes when its last window is decoded. On a GPU the codec calls
replay CUDA graphs (``codec.DecodeGraphs``): each call is padded to a power-of-two count of windows
and to one of ``codec.PAD_FRAMES``, and :meth:`FishBatcher.warm` captures those shapes while the
scheduler is idle, so that no capture stalls a running batch.

With ``codec_overlap`` (opt-in) the codec calls run on a thread of their own (on CUDA, on their
own stream) while the decoder steps go on: one group of windows in flight at a time, its audio
handed out at the first step after it is done. Off by default: on an H200 with the codec on the
GPU it raised aggregate throughput at c=16 (43.3x against 38.5x realtime) but the first audio came
only about when the whole utterance was done (1.2 s at c=1 instead of 0.11 s), for a reason not
found yet (BENCHMARKS.md). Without it a step waits for its codec calls.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxbox.engines.batched import Piece, next_pow2, pow2_buckets, pow2_floor
from voxbox.types import AudioChunk

from .batch import OPTION_NAMES, PREFILL_ROWS, BatchRunner, RowPrompt
from .codec import PAD_FRAMES

__all__ = ["FishBatcher", "FishRequest"]

log = logging.getLogger("voxbox.engines")


@dataclass
class FishRequest:
    """A parsed call (``prompt._Call`` with its prompt built) plus what batching needs."""

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
        self.due_end: int | None = None  # end of the window waiting for the codec (None: none queued)
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

    def __init__(self, engine: Any, slots: int, *, capture: bool = True, codec_batch: int = 8,
                 prefix_cache: int = 8, codec_overlap: bool = False) -> None:
        self.engine = engine
        self.codec = engine.codec
        self.graphs = engine.codec_graphs
        self.runner = BatchRunner(engine.runner, slots, prefix_cache=prefix_cache)
        self.max_batch = self.runner.slots
        self.codec_batch = max(1, int(codec_batch))
        self.eos = engine.runner.eos
        self.ncb = engine.runner.ncb
        self.seqs: list[_Seq] = []  # decoding, in row order
        self.draining: list[_Seq] = []  # stopped, their row freed, a last window still queued
        self._queue: list[_Seq] = []  # windows waiting for the codec
        self.steps = 0
        self._codec_dev = engine.placement["codec"][0]
        self.codec_overlap = bool(codec_overlap)
        self._codec_pool = (ThreadPoolExecutor(1, thread_name_prefix="voxbox-fish-codec")
                            if self.codec_overlap else None)
        self._codec_stream = (torch.cuda.Stream(self._codec_dev)
                              if self.codec_overlap and torch.device(self._codec_dev).type == "cuda" else None)
        # the codec work in flight: its future and, per group, (new frames, members, their window ends)
        self._inflight: tuple[Future[list[tuple[np.ndarray, float]]],
                              list[tuple[int, list[_Seq], list[int]]]] | None = None
        self.codec_waits = 0  # steps that waited for the codec (no decoder work to overlap)
        self._codec_rows = pow2_buckets(next_pow2(self.codec_batch))  # what DecodeGraphs pads the windows to
        self._warm_todo: list[tuple[str, int, int, int]] | None = None  # what warm() has left
        self.warm_graphs = 0  # graphs captured by warm()
        self.warm_s = 0.0
        if capture:
            t0 = time.perf_counter()
            self.runner.capture_all()
            if self.runner.use_graphs:
                log.info("fish-s2: captured %d batch graphs in %.1f s", len(self.runner._graphs),
                         time.perf_counter() - t0)

    # ------------------------------------------------------------------ Batcher protocol
    def admit(self, requests: list[FishRequest]) -> list[_Seq]:
        t0 = time.perf_counter()
        row0 = len(self.seqs)
        new = [_Seq(req, row0 + i, self.ncb) for i, req in enumerate(requests)]
        prompts = []
        for req in requests:
            c, o = req.call, req.call.opts
            prompts.append(RowPrompt(c.ids, c.vq_mask, c.vq_codes, {k: getattr(o, k) for k in OPTION_NAMES}, o.top_k,
                                     o.min_frames, req.seed, o.bias, c.prefix_len, req.prefix_key))
        try:
            computed = self.runner.start(row0, prompts)
            _sync(self.runner.device)
        except BaseException:
            for seq in new:
                self.runner.release(seq.row)
            raise
        self.seqs.extend(new)
        dt = time.perf_counter() - t0
        for seq, n in zip(new, computed, strict=True):
            seq.details["prefill_tokens"] = n
            if seq.req.prefix_key is not None and seq.req.call.prefix_len:
                seq.details["prefix_cache"] = "hit" if n < seq.prompt_tokens - 1 else "miss"
            seq.add("batch_wait", max(0.0, t0 - seq.req.submitted))
            seq.add("prefill", dt)
        return new

    def step(self) -> list[tuple[_Seq, list[Piece[AudioChunk]], bool]]:
        n = len(self.seqs)
        stopped: list[_Seq] = []
        if n:
            t0 = time.perf_counter()
            out = self.runner.step(n, max(s.pos for s in self.seqs) + 1).numpy()
            dt = time.perf_counter() - t0
            self.steps += 1
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
                if s.stop is not None:
                    stopped.append(s)
                if s.due_end is None and s.made > s.emitted and (s.stop is not None or self._window_due(s)):
                    self._enqueue(s)
            for s in stopped:  # its row is free for the next request now; its last window may still wait
                self._detach(s)
                self.draining.append(s)
        self._collect_codec(wait=not self.seqs)
        if self._queue and self._inflight is None:
            self._decode_some()
            if not self.seqs:  # nothing to overlap with: hand the audio out in this step
                self._collect_codec(wait=True)
        results = []
        for s in [*self.seqs, *self.draining]:
            done = s.stop is not None and s.due_end is None
            if done:
                s.piece(None, self._final(s))
            if s.pieces:
                results.append((s, s.pieces, done))
                s.pieces = []
        self.draining = [s for s in self.draining if s.due_end is not None]
        return results

    def drop(self, handle: _Seq) -> None:
        if handle.due_end is not None:
            handle.due_end = None
            self._queue = [s for s in self._queue if s is not handle]
        if handle in self.draining:
            self.draining.remove(handle)
        self._detach(handle)

    def _detach(self, s: _Seq) -> None:
        """Free ``s``'s row: the last row moves into it (rows stay 0..n-1)."""
        row = s.row
        if row < 0 or row >= len(self.seqs) or self.seqs[row] is not s:
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
        s.row = -1

    # ------------------------------------------------------------------ windows
    def _window_due(self, s: _Seq) -> bool:
        if s.index == 0:
            return s.made - s.emitted >= s.opts.first_window
        return self.steps % s.opts.window == 0 or s.made - s.emitted >= s.opts.window

    def _enqueue(self, s: _Seq) -> None:
        """Queue ``s``'s window (the frames made so far); first and last windows go first."""
        s.due_end = s.made
        if s.index == 0 or s.stop is not None:
            self._queue.insert(sum(1 for q in self._queue if q.index == 0 or q.stop is not None), s)
        else:
            self._queue.append(s)

    def _decode_some(self) -> None:
        """Decode up to ``codec_batch`` queued windows (with their left context); windows of one
        shape share a codec call. Bounding the windows per step keeps every step short, so a new
        request waits at most one such step to join. With ``codec_overlap`` the calls go to the
        codec thread and their audio is handed out by :meth:`_collect_codec`."""
        take, self._queue = self._queue[:self.codec_batch], self._queue[self.codec_batch:]
        groups: dict[tuple[int, int], list[_Seq]] = {}
        for s in take:
            ctx = s.emitted - max(0, s.emitted - s.opts.context_frames)
            groups.setdefault((ctx, int(s.due_end) - s.emitted), []).append(s)  # type: ignore[arg-type]
        work = [(new, np.stack([s.codes[s.emitted - ctx:s.emitted + new].T for s in members]))
                for (ctx, new), members in groups.items()]
        meta = [(new, members, [int(s.due_end) for s in members])  # type: ignore[arg-type]
                for (_, new), members in groups.items()]
        if self._codec_pool is None:
            self._apply(meta, self._run_codec(work))
        else:
            self._inflight = (self._codec_pool.submit(self._run_codec, work), meta)

    def _run_codec(self, work: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, float]]:
        """Audio of each group's new frames (the codec thread, or the scheduler's without overlap)."""
        fl = self.codec.frame_length
        out = []
        stream = torch.cuda.stream(self._codec_stream) if self._codec_stream is not None else nullcontext()
        with torch.inference_mode(), stream:
            for new, codes in work:
                t0 = time.perf_counter()
                audio = self.graphs.decode(torch.from_numpy(codes).to(self._codec_dev))
                out.append((audio[:, audio.shape[1] - new * fl:].cpu().numpy(), time.perf_counter() - t0))
        return out

    def warm(self) -> bool:
        """Idle-time warm-up (called by the runtime's scheduler while nothing is in flight): one
        graph per call, True while more are left. First the codec's padded shapes for the
        engine's default windows (the first window's first), then the prefill of 1, 2, 4, 8 and
        16 rows of up to 32, 64, 16 and 128 text tokens, after a cached prefix within the first
        attention span, then within the second (other shapes are captured when first met)."""
        e, r = self.engine, self.runner
        if self._warm_todo is None:
            last = self.graphs.padded(1, e.context_frames + e.window)[1]
            frames = [self.graphs.padded(1, e.first_window)[1]] + [t for t in PAD_FRAMES if t <= last]
            todo = [("codec", b, t, 0) for t in frames for b in self._codec_rows]
            rows = pow2_buckets(pow2_floor(min(PREFILL_ROWS, r.slots)))  # the pieces prefills are split into
            for begin in [0] + r.spans[:1] if len(r.spans) > 1 else [0]:  # a prefix within 1 or 2 spans
                todo += [("prefill", n, t, begin) for t in (32, 64, 16, 128) for n in rows]
            self._warm_todo = list(dict.fromkeys(todo))
        while self._warm_todo:
            kind, b, t, begin = self._warm_todo.pop(0)
            t0 = time.perf_counter()
            if kind == "codec":
                if not self.graphs.active or (b, self.ncb, t) in self.graphs.graphs \
                        or len(self.graphs.graphs) >= self.graphs.limit:
                    continue
                self.graphs.decode(torch.zeros(b, self.ncb, t, dtype=torch.long, device=self._codec_dev))
            elif self.seqs or not r.warm_prefill(b, t, begin):  # rows 0.. must be free; False: nothing captured
                continue
            _sync(r.device)
            self.warm_graphs += 1
            self.warm_s += time.perf_counter() - t0
            return bool(self._warm_todo)
        return False

    def _collect_codec(self, wait: bool) -> None:
        """Hand out the in-flight codec work's audio once it is done (``wait``: block for it)."""
        if self._inflight is None:
            return
        fut, meta = self._inflight
        if not fut.done():
            if not wait:
                return
            self.codec_waits += 1
        self._inflight = None
        self._apply(meta, fut.result())

    def _apply(self, meta: list[tuple[int, list[_Seq], list[int]]], results: list[tuple[np.ndarray, float]]) -> None:
        sr = self.codec.sample_rate
        for (new, members, ends), (audio, dt) in zip(meta, results, strict=True):
            for s, end, samples in zip(members, ends, audio, strict=True):
                if s.due_end != end:  # dropped while its window was decoded
                    continue
                s.add("codec", dt)
                s.emitted += new
                s.due_end = None
                chunk = AudioChunk(np.ascontiguousarray(samples), sr, index=s.index,
                                   text=s.req.call.text if s.index == 0 else None)
                s.index += 1
                s.piece(chunk, {"frames": s.emitted})
                if s.stop is not None and s.made > s.emitted:
                    self._enqueue(s)  # frames made while this window waited: one more window

    def close(self) -> None:
        """Stop the codec thread (the scheduler calls this when it stops)."""
        if self._codec_pool is not None:
            self._codec_pool.shutdown(wait=True, cancel_futures=True)

    def _final(self, s: _Seq) -> dict[str, Any]:
        return {**s.details, "frames": s.emitted, "finish_reason": s.stop,
                "codes": torch.from_numpy(s.codes[:s.made].T.copy()),
                "ms_per_frame": 1000.0 * s.decode_s / max(1, s.steps), "prompt_tokens": s.prompt_tokens,
                "batched": True, "batch_size_max": s.max_batch}

    def stats(self) -> dict[str, Any]:
        r = self.runner
        return {"slots": r.slots, "active": len(self.seqs), "draining": len(self.draining), "steps": self.steps,
                "codec_queue": len(self._queue), "codec_in_flight": self._inflight is not None,
                "codec_waits": self.codec_waits, "graphs": len(r._graphs),
                "prefix_hits": r.prefix_hits, "prefix_misses": r.prefix_misses, "compile_error": r.compile_error,
                "static_prefills": r.static_prefills, "codec_graphs": len(self.graphs.graphs),
                "warm_graphs": self.warm_graphs, "warm_s": round(self.warm_s, 3),
                "prefill_graph_error": r.prefill_graph_error, "codec_graph_error": self.graphs.error}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
