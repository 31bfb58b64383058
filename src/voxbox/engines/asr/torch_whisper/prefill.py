"""CUDA graphs of the batcher's prefill: one per (windows, prompt length, timestamps or not).

:class:`~voxbox.engines.asr.torch_whisper.batcher.WindowBatcher` prefills the windows an admission
brings (cross-attention K/V and the prompt written into their slots, the first token chosen) with
one graph-safe function whose slots are data (an index tensor), not shapes. Here that function is
captured per (power-of-two count of windows, prompt length, timestamps) on first use, reading
static inputs: the windows' encoder outputs, and one int64 buffer holding their slots, the index
of ``<|startoftranscript|>`` in each prompt, and the prompts. Replaying a graph is a few launches
where the eager prefill issues some 300 kernels from Python, which under a busy server's GIL left
the GPU idle between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from voxbox.engines.graphs import capture_graph

__all__ = ["PrefillGraphs"]

log = logging.getLogger(__name__)


class PrefillGraphs:
    """``fn(slots, enc, prompts, sot, timestamps, greedy)`` replayed from graphs.

    ``rows``: the most windows one replay takes; ``max_len``: the longest prompt captured (longer
    ones, whose lengths vary, stay eager); ``pool``: returns the memory pool the graphs share with
    the batcher's step graphs (they never run at the same time). After a failed capture ``error``
    says why and :meth:`run` declines from then on."""

    def __init__(self, fn: Callable[..., Any], rows: int, max_len: int, source: int, d_model: int,
                 device: torch.device, dtype: torch.dtype, pool: Callable[[], Any]) -> None:
        self.fn = fn
        self.rows, self.max_len = rows, max_len
        self._shape = (source, d_model)
        self.device, self.dtype = device, dtype
        self._pool = pool
        self.graphs: dict[tuple[int, int, bool], torch.cuda.CUDAGraph] = {}
        self._enc: torch.Tensor | None = None  # static inputs, allocated at the first capture
        self._ints = torch.zeros(0)
        self.error: str | None = None

    def takes(self, n: int) -> bool:
        """Whether prompts of ``n`` tokens are prefilled by graphs."""
        return self.error is None and n <= self.max_len

    def run(self, ints: list[int], encs: list[torch.Tensor], n: int, ts: bool) -> bool:
        """One replay for ``len(encs)`` windows (a power of two, at most ``rows``) with prompts of
        ``n`` tokens: ``ints`` is their slots, then their ``<|startoftranscript|>`` indices, then
        their prompts, flat. False when a capture failed (the caller prefills eagerly)."""
        r = len(encs)
        if self._enc is None:
            self._enc = torch.zeros(self.rows, *self._shape, device=self.device, dtype=self.dtype)
            self._ints = torch.zeros(self.rows * (2 + self.max_len), dtype=torch.long, device=self.device)
        host = torch.tensor(ints, dtype=torch.long).pin_memory()
        self._ints[: host.shape[0]].copy_(host, non_blocking=True)  # pinned: no wait for the GPU
        torch.cat(encs, out=self._enc[:r])
        key = (r, n, ts)
        g = self.graphs.get(key)
        if g is None:
            b = self._ints
            args = (b[:r], self._enc[:r], b[2 * r : 2 * r + r * n].view(r, n), b[r : 2 * r], ts, True)

            def run() -> None:
                self.fn(*args)

            try:
                g = capture_graph(run, (), self._pool(), mode="thread_local")
            except Exception as exc:  # noqa: BLE001 - a backend that cannot be captured: eager from now on
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("prefill CUDA graph capture failed, prefilling eagerly: %s", self.error)
                return False
            self.graphs[key] = g
        g.replay()
        return True
