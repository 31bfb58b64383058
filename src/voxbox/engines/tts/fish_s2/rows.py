"""Per-row pieces of a batched dual-AR step: sampling, the random draw, rotary positions per row.

Each function is the batched twin of one in ``ops`` (``_sample``, ``_qkv_prep``), row ``r`` of the
result equal to the single-call function on row ``r`` of the input; ``RowOps`` bundles them (and
the shared elementwise ones) compiled once with a dynamic batch size on CUDA.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from .ops import _add_rms, _qkv_prep, _rms, _swiglu

__all__ = ["RowOps", "hashed_noise", "sample_rows"]


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLD, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def hashed_noise(seed: Tensor, frame: Tensor, salt: int, width: int) -> Tensor:
    """Exp(1) noise (B, width) from splitmix64 of (seed, frame, salt, column): the same for a row
    whatever else is in the batch. int64 arithmetic wraps, as splitmix64 needs; graph-capturable."""
    j = torch.arange(width, device=seed.device)
    z = seed[:, None] * _GOLD + (frame[:, None] * 64 + salt) * _MIX1 + j[None, :]
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    u = (_shr(z, 40).float() + 0.5) * (1.0 / (1 << 24))
    return -torch.log(u)


def sample_rows(logits: Tensor, temperature: Tensor, top_p: Tensor, top_k: Tensor, noise: Tensor) -> Tensor:
    """``ops._sample`` per row: logits (B, N) fp32, options (B,), noise (B, width) -> (B,) indices."""
    width = noise.shape[1]
    vals, idx = torch.topk(logits, width, dim=-1)
    ar = torch.arange(width, device=logits.device)[None, :]
    vals = vals.masked_fill(ar >= top_k[:, None], float("-inf"))
    cum = torch.cumsum(torch.softmax(vals, dim=-1), dim=-1)
    vals = vals.masked_fill((cum > top_p[:, None]) & (ar > 0), float("-inf"))
    probs = torch.softmax(vals / temperature.clamp(min=1e-5)[:, None], dim=-1)
    pick = torch.argmax(probs / noise, dim=-1)
    pick = torch.where(temperature > 0, pick, torch.zeros_like(pick))
    return idx.gather(1, pick[:, None])[:, 0]


def _qkv_prep_rows(qkv: Tensor, w: Tensor | None, cs: Tensor, eps: float, H: int, G: int,
                   D: int) -> tuple[Tensor, Tensor]:
    """``ops._qkv_prep`` for one position per row, each at its own rotary angle: qkv (B, 1, ...),
    cs (B, D/2, 2) -> q (B, 1, H, D) and the new cache entries k|v (2, B, G, 1, D)."""
    B = qkv.shape[0]
    qk = qkv[..., : (H + G) * D].view(B, 1, H + G, D)
    if w is not None:
        qk = _rms(qk, w, eps)
    xf = qk.float().unflatten(-1, (-1, 2))
    c, s = cs[:, None, None, :, 0], cs[:, None, None, :, 1]
    a, b = xf[..., 0], xf[..., 1]
    qk = torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2).to(qkv.dtype)
    v = qkv[..., (H + G) * D:].view(B, 1, G, D)
    return qk[:, :, :H], torch.stack([qk[:, :, H:], v]).transpose(2, 3)


class RowOps:
    """Elementwise pieces of a batched step; on CUDA ``torch.compile``d with a dynamic batch size
    (one compile serves every bucket, besides the size-1 specialisation). ``qkv_prep`` gives each
    row its own position (slow step), ``qkv_prep_shared`` one position for all rows (fast loop)."""

    def __init__(self, compiled: bool) -> None:
        self.rms, self.add_rms, self.swiglu = _rms, _add_rms, _swiglu
        self.qkv_prep, self.qkv_prep_shared, self.sample = _qkv_prep_rows, _qkv_prep, sample_rows
        self.compiled = False
        if compiled:
            c = lambda f: torch.compile(f, dynamic=True, fullgraph=True)  # noqa: E731
            self.rms, self.add_rms, self.swiglu = c(_rms), c(_add_rms), c(_swiglu)
            self.qkv_prep, self.qkv_prep_shared, self.sample = c(_qkv_prep_rows), c(_qkv_prep), c(sample_rows)
            self.compiled = True

    def shared(self) -> Any:
        """The ops as ``transformer.run_layers`` wants them for the fast loop (one position for all rows)."""
        view = copy.copy(self)
        view.qkv_prep = self.qkv_prep_shared
        return view
