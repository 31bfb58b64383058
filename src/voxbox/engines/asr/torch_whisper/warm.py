"""torch-whisper's idle-time warm-up: the CUDA graphs batched traffic will need, captured ahead.

The runtime's scheduler calls ``WindowBatcher.warm()`` while no window is in flight;
:class:`IdleWarmup` then captures one graph per call, most likely first, so that a capture (which
waits for the whole device) rarely lands inside a running batch:

1. the encoder's graph for every power-of-two piece of an admission;
2. for timestamps off, then on: the default prompt's prefill for every power-of-two count of
   windows, and the greedy step of every occupied-slot bucket at each attended length up to
   :data:`WARM_KV_LEN`.

Whatever it did not capture is captured on first use, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from voxbox.engines.asr.torch_whisper.decoding import ENCODER_GRAPH_MAX, KV_BUCKET
from voxbox.engines.batched import pow2_buckets

if TYPE_CHECKING:
    from voxbox.engines.asr.torch_whisper.batcher import WindowBatcher

__all__ = ["WARM_KV_LEN", "IdleWarmup"]

#: Step graphs are warmed up to this many attended positions (100 tokens of speech per 30-s window
#: stay within 128).
WARM_KV_LEN = 256


class IdleWarmup:
    """The warm-up of one :class:`WindowBatcher` (its graphs, slots and runner); ``prompts``: the
    default prompt per timestamps setting (no language given, no initial prompt)."""

    def __init__(self, batcher: WindowBatcher, prompts: dict[bool, list[int]] | None) -> None:
        self.b = batcher
        self.prompts = dict(prompts or {})
        self.todo: list[tuple[Callable[..., bool], tuple[Any, ...]]] | None = None
        self.graphs = 0  # graphs captured
        self.seconds = 0.0

    def plan(self) -> list[tuple[Callable[..., bool], tuple[Any, ...]]]:
        b = self.b
        if not b.runner.use_graphs:
            return []
        buckets = pow2_buckets(b.max_batch)
        kv_lens = range(KV_BUCKET, min(b.max_len, WARM_KV_LEN) + 1, KV_BUCKET)
        plan: list[tuple[Callable[..., bool], tuple[Any, ...]]] = [
            (self._encoder, (n,)) for n in buckets if n <= ENCODER_GRAPH_MAX]
        for ts in (False, True):
            prompt = self.prompts.get(ts)
            if prompt and b._prefills.takes(len(prompt)):
                plan += [(self._prefill, (r, ts)) for r in buckets if r <= b._prefills.rows]
            plan += [(self._step, (hi, kv, True, ts)) for kv in kv_lens for hi in buckets]
        return plan

    def step(self) -> bool:
        """Capture one graph of the plan not captured yet; True while more are left."""
        b = self.b
        if self.todo is None:
            self.todo = self.plan()
        if b._seqs or len(b._free) < b.max_batch:
            return False  # not idle after all (a bug elsewhere): stop rather than touch live slots
        while self.todo:
            fn, args = self.todo.pop(0)
            t0 = time.perf_counter()
            if not fn(*args):  # captured already (or given up)
                continue
            torch.cuda.synchronize(b.runner.device)
            self.graphs += 1
            self.seconds += time.perf_counter() - t0
            return bool(self.todo)
        return False

    def _encoder(self, n: int) -> bool:
        runner, d = self.b.runner, self.b.model.dims
        if n in runner._enc_graphs or runner.encoder_graph_error is not None:
            return False
        with torch.inference_mode():  # the same call an admission makes: captures its piece
            runner.encode(torch.zeros(n, d.n_mels, 2 * d.max_source_positions, device=runner.device,
                                      dtype=runner.dtype))
        return True

    def _step(self, hi: int, kv_len: int, greedy: bool, ts: bool) -> bool:
        if (hi, kv_len, greedy, ts) in self.b._graphs:
            return False
        with torch.inference_mode():
            self.b._run(hi, kv_len, greedy, ts)
        return True

    def _prefill(self, r: int, ts: bool) -> bool:
        """The prefill graph of ``r`` windows with the default prompt captured (and run once) on
        free slots 0..r-1 and zero encoder output; the slots are left free and their rows reset."""
        b, prompt = self.b, self.prompts[ts]
        if (r, len(prompt), ts) in b._prefills.graphs:
            return False
        d = b.model.dims
        enc = torch.zeros(1, d.max_source_positions, d.d_model, device=b.runner.device, dtype=b.runner.dtype)
        ints = list(range(r)) + [prompt.index(b.tok.sot)] * r + prompt * r
        with torch.inference_mode():
            b._prefills.run(ints, [enc] * r, len(prompt), ts)
            b.active[:r] = False
            b.pos[:r] = 0
            b.tokens[:r] = 0
        if b._prefills.error is not None:  # prefills stay eager: the step graphs still help
            self.todo = [item for item in self.todo or [] if item[0] != self._prefill]
        return True
