"""CUDA graph capture shared by engines: torch-whisper's decoder, encoder, batcher steps and prefills;
fish-s2's codec windows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["capture_graph"]


def capture_graph(fn: Callable[[], None], keep: Sequence[torch.Tensor], pool: Any, *,
                  mode: str = "global") -> torch.cuda.CUDAGraph:
    """``fn`` run once on a side stream (lazy library init, allocator, compilation), the tensors in
    ``keep`` restored to their values before it, then captured into a CUDA graph (not run).
    ``mode``: the capture error mode (``thread_local`` where other threads use the GPU meanwhile)."""
    torch.cuda.synchronize()
    saved = [t.clone() for t in keep]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    for t, v in zip(keep, saved, strict=True):
        t.copy_(v)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool, capture_error_mode=mode):  # type: ignore[arg-type]
        fn()
    torch.cuda.synchronize()
    return g
