"""The text side of a call: upstream's text encoder, its norm and the DiT's text keys/values for all
24 layers, replayed from one CUDA graph per padded text length.

Run eagerly this is about 200 small kernels (14 encoder layers over at most 768 byte tokens, then
one product for every layer's keys and values): on an H200 it took 12-22 ms of wall time for well
under 1 ms of GPU work, all of it on the path to the first audio. The math is upstream's
``TextEncoder.forward`` step for step; the only change is that the rotary table
(``precompute_freqs_cis``, built on the CPU and copied to the device on every call upstream, which
a graph cannot hold) is built once per length and kept on the device.

Graphs are used where the text encoder and the DiT share one CUDA device and the DiT uses graphs;
elsewhere (CPU, hybrid placements) the same forward runs eagerly. A capture that fails is logged
once and that length runs eagerly from then on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch

from voxbox.engines.graphs import capture_graph

from ._upstream import UpstreamModule, upstream_model

__all__ = ["TextContext"]

log = logging.getLogger(__name__)


class _Graph:
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids, self.mask = ids, mask
        self.graph: Any = None
        self.out: tuple[torch.Tensor, torch.Tensor] | None = None


class TextContext:
    """``(ids, mask)`` on the CPU, (1, tlen) -> the DiT's text keys and values (L, 1, tlen, H, Dh)."""

    def __init__(self, encoder: UpstreamModule, norm: UpstreamModule, dit: Any, device: torch.device, *,
                 use_graphs: bool, max_lengths: int = 8) -> None:
        self.encoder, self.norm, self.dit, self.device = encoder, norm, dit, device
        self.use_graphs = bool(use_graphs) and device.type == "cuda" and device == dit.device
        self._freqs: dict[int, torch.Tensor] = {}
        self._graphs: OrderedDict[int, _Graph] = OrderedDict()
        self._failed: set[int] = set()
        self._max = max(1, int(max_lengths))
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.captured = 0

    def _rope(self, n: int) -> torch.Tensor:
        f = self._freqs.get(n)
        if f is None:
            f = self._freqs[n] = upstream_model().precompute_freqs_cis(self.encoder.head_dim, n).to(self.device)
        return f

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream ``text_norm(text_encoder(ids, mask))``, then ``DiTRunner.context_kv``; ids/mask on the device."""
        x = self.encoder.text_embedding(ids)
        freqs = self._rope(ids.shape[1])
        for block in self.encoder.blocks:
            x = block(x, mask, freqs)
        state = self.norm(x)
        return self.dit.context_kv(state.to(device=self.dit.device, dtype=self.dit.dtype), self.dit.w_ctx_text)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[1]
        if not self.use_graphs or ids.shape[0] != 1 or n in self._failed:
            return self.forward(ids.to(self.device), mask.to(self.device))
        g = self._graphs.get(n)
        if g is None:
            g = self._capture(n)
            if g is None:
                return self.forward(ids.to(self.device), mask.to(self.device))
        else:
            self._graphs.move_to_end(n)
        g.ids.copy_(ids)
        g.mask.copy_(mask)
        g.graph.replay()
        assert g.out is not None
        # copies: the graph's outputs are overwritten by its next replay
        return g.out[0].clone(), g.out[1].clone()

    def _capture(self, n: int) -> _Graph | None:
        g = _Graph(torch.zeros((1, n), dtype=torch.int32, device=self.device),
                   torch.ones((1, n), dtype=torch.bool, device=self.device))

        def run() -> None:
            g.out = self.forward(g.ids, g.mask)

        try:
            g.graph = capture_graph(run, (), self._pool)
        except Exception as exc:  # noqa: BLE001 - any capture failure: this length runs eagerly
            log.info("echo-tts: text encoder graph for %d tokens not captured (%s: %s); eager",
                     n, type(exc).__name__, exc)
            self._failed.add(n)
            return None
        while len(self._graphs) >= self._max:
            self._graphs.popitem(last=False)
        self._graphs[n] = g
        self.captured += 1
        return g
