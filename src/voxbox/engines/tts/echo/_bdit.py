"""The Echo-TTS DiT forward over many requests at once (batching across requests).

``DiTRunner`` runs one request: its three guidance branches (conditional, no text, no speaker)
as a batch of 3. ``BatchedDiT`` runs *rows*: each row is one (request, branch) pair with its own
text/speaker keys and values, its own attention mask and its own timestep modulation, so requests
at different diffusion steps share one forward (continuous batching of the sampler). Rows of one
forward share the (sequence, text, speaker) bucket (``RowShape``); the rows are laid out
``[conditional x n | no text x g | no speaker x g]`` for the g requests inside their guidance
interval (``cfg_min_t <= t <= cfg_max_t``), padded to a bucket of rows (1, 2, 3, 4, 6, 8, 12...).
The per-row context keys/values are gathered into the shape's buffers only when that layout
changes.

The block is upstream's math (``_dit._block``): the per-row modulations arrive as (2, 2, R, 1, D)
and broadcast over positions exactly as the shared (2, 2, D) ones do. On CUDA each row bucket is
a CUDA graph (the block ``torch.compile``d once with dynamic shapes when the runner compiles).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from voxbox.engines.batched import bucket, pow2_buckets

from ._dit import COMPILE_OPTIONS, DiTRunner, _block, _rms

__all__ = ["BatchedDiT", "RowShape", "context_rows"]


def context_rows(runner: DiTRunner, state: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``DiTRunner.context_kv`` for a batch of states (k, n, dim): keys and values (L, k, n, H, Dh)."""
    L, H, Dh = runner.num_layers, runner.num_heads, runner.head_dim
    k, n = state.shape[0], state.shape[1]
    kv = F.linear(state, weight).view(k, n, L, 2, H, Dh).permute(2, 3, 0, 1, 4, 5)
    keys = (_rms(kv[:, 0], runner.eps) * runner.k_norm_all[:, None, None]).to(runner.dtype)
    return keys, kv[:, 1]


class RowShape:
    """Static buffers for up to ``rows`` (request, branch) rows of one (seq, text, speaker) bucket."""

    def __init__(self, d: DiTRunner, rows: int, seq: int, text_len: int, spk_len: int) -> None:
        dev, dt = d.device, d.dtype
        L, H, Dh, D = d.num_layers, d.num_heads, d.head_dim, d.model_size
        self.rows, self.seq, self.text_len, self.spk_len = rows, seq, text_len, spk_len
        self.ctx = text_len + spk_len
        self.ltot = self.ctx + seq
        self.k = torch.zeros((L, rows, self.ltot, H, Dh), device=dev, dtype=dt)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.zeros((rows, 1, 1, self.ltot), device=dev, dtype=dt)
        self.xin = torch.zeros((rows, seq, int(d.latent_size)), device=dev, dtype=torch.float32)
        self.mod = torch.zeros((L, 2, 2, rows, 1, D), device=dev, dtype=torch.float32)
        self.gate = torch.zeros((L, 2, rows, 1, D), device=dev, dtype=dt)
        freqs = 1.0 / (10000.0 ** (torch.arange(0, Dh, 2)[: Dh // 2] / Dh))  # as _dit._Shape
        ang = torch.outer(torch.arange(seq), freqs)
        self.rope = torch.complex(torch.cos(ang), torch.sin(ang))[:, None, None, :].to(dev)
        self.layout: Any = None  # what the context buffers hold now
        self.graphs: dict[int, tuple[Any, torch.Tensor]] = {}

    @staticmethod
    def nbytes(d: DiTRunner, rows: int, ltot: int) -> int:
        esz = torch.tensor([], dtype=d.dtype).element_size()
        return 2 * d.num_layers * rows * ltot * d.num_heads * d.head_dim * esz


class BatchedDiT:
    """Forward passes over rows (see the module docstring); owns no weights (``DiTRunner``'s)."""

    def __init__(self, runner: DiTRunner, max_rows: int, *, compile: bool | None = None) -> None:
        self.d = runner
        # row buckets a forward is padded to (a graph each): 1, 2, 3, 4, 6, 8, 12, 16, 24, ...
        self.sizes = sorted({b for p in pow2_buckets(max_rows) for b in (p, p + p // 2) if b <= max_rows} | {max_rows})
        if runner._block is not _block if compile is None else compile:
            self._block = torch.compile(_block, dynamic=True, options=COMPILE_OPTIONS)
            self.compiled = True
        else:
            self._block = _block
            self.compiled = False
        self.compile_error: str | None = None
        self._pool = torch.cuda.graph_pool_handle() if runner.use_graphs else None

    def set_layout(self, shp: RowShape, layout: Sequence[tuple[Any, int]], key: Any) -> None:
        """Write the context keys/values and the mask of each row (request, branch) in ``layout``:
        the request's text_kv / spk_kv / text_valid / spk_valid, masked per branch as upstream."""
        if shp.layout == key:
            return
        tl, sl = shp.text_len, shp.spk_len
        valid = torch.ones((len(layout), shp.ltot), dtype=torch.bool)
        for w, (req, branch) in enumerate(layout):
            shp.k[:, w, :tl] = req.text_kv[0]
            shp.v[:, w, :tl] = req.text_kv[1]
            if req.spk_kv is not None:
                shp.k[:, w, tl:tl + sl] = req.spk_kv[0]
                shp.v[:, w, tl:tl + sl] = req.spk_kv[1]
            else:
                shp.k[:, w, tl:tl + sl] = 0
                shp.v[:, w, tl:tl + sl] = 0
            valid[w, req.text_valid:tl] = False
            valid[w, tl + req.spk_valid:tl + sl] = False
            if branch == 1:
                valid[w, :tl] = False
            elif branch == 2:
                valid[w, tl:tl + sl] = False
        mask = torch.zeros((len(layout), shp.ltot), dtype=torch.float32)
        mask[~valid] = float("-inf")
        shp.mask[:len(layout)] = mask.view(len(layout), 1, 1, -1).to(device=shp.mask.device, dtype=shp.mask.dtype)
        shp.mask[len(layout):] = 0  # padding rows attend everything: finite garbage, never read
        shp.layout = key

    def forward(self, shp: RowShape, used: int) -> torch.Tensor:
        """The velocity (R, seq, latent) float32 for rows 0..used-1 (and the bucket's padding)."""
        R = bucket(used, [s for s in self.sizes if s <= shp.rows] or [shp.rows])
        if self.d.use_graphs:
            hit = shp.graphs.get(R)
            if hit is None:
                hit = shp.graphs[R] = self._capture(shp, R)
            hit[0].replay()
            return hit[1]
        return self._forward(shp, R)

    def _forward(self, shp: RowShape, R: int) -> torch.Tensor:
        d = self.d
        h = F.linear(shp.xin[:R].to(d.dtype), d.in_w, d.in_b)
        for i, (w_qkvg, w_o, qk_norm, w13, w2) in enumerate(d.layers):
            h = self._block(h, w_qkvg, w_o, qk_norm, w13, w2, shp.mod[i, :, :, :R], shp.gate[i, :, :R],
                            shp.k[i, :R], shp.v[i, :R], shp.mask[:R], shp.rope, d.eps)
        out_norm: Any = d.out_norm
        h = (_rms(h, d.eps) * out_norm).to(d.dtype)
        return F.linear(h, d.out_w, d.out_b).float()

    def _capture(self, shp: RowShape, R: int) -> tuple[Any, torch.Tensor]:
        dev = self.d.device
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        try:
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward(shp, R)
        except Exception as exc:  # the dynamic-shape compile failed: eager block from now on
            if not self.compiled:
                raise
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
            logging.getLogger("voxbox.engines").warning("echo-tts batching: the compiled block failed, eager from now "
                                                        "on: %s", self.compile_error)
            self._block, self.compiled = _block, False
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward(shp, R)
        torch.cuda.current_stream(dev).wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        # thread_local: callers' threads may use the GPU meanwhile (voice encoding), which is no error
        with torch.cuda.graph(g, pool=self._pool, capture_error_mode="thread_local"):
            out = self._forward(shp, R)
        return g, out
