"""The elementwise pieces of a Fish S2-Pro decoder step, as small pure functions.

Interleaved RoPE (``rope_table``, ``apply_rope``), RMSNorm (``_rms``, ``_add_rms``), the fused
q/k norm + RoPE + new cache entry (``_qkv_prep``), SwiGLU and the sampler (``_sample``: top-k,
top-p, temperature, an Exp(1)-noise multinomial draw). ``_Ops`` bundles them; on CUDA it holds
``torch.compile``d versions (each fuses into one kernel) for one-position steps, ``EAGER`` the
plain ones. ``rows`` holds the batched twins; ``transformer`` and ``model`` call them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EAGER", "apply_rope", "rope_table"]


def rope_table(positions: int, head_dim: int, base: float) -> Tensor:
    """(positions, head_dim/2, 2) cos/sin, rounded to bfloat16 as upstream's cache is, kept in fp32."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32)[: head_dim // 2] / head_dim))
    ang = torch.outer(torch.arange(positions, dtype=torch.float32), inv)
    table = torch.stack([torch.cos(ang), torch.sin(ang)], dim=-1)
    return table.to(torch.bfloat16).to(torch.float32)


def apply_rope(x: Tensor, cs: Tensor) -> Tensor:
    """Interleaved-pair rotation. x: (B, T, H, D); cs: (T, D/2, 2)."""
    xf = x.float().unflatten(-1, (-1, 2))
    c = cs[None, :, None, :, 0]
    s = cs[None, :, None, :, 1]
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2).to(x.dtype)


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def _add_rms(x: Tensor, d: Tensor, w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    h = x + d
    return h, _rms(h, w, eps)


def _qk_rope(qk: Tensor, w: Tensor | None, cs: Tensor, eps: float) -> Tensor:
    """Per-head RMSNorm (when ``w``, one row per head) then RoPE, for q and k heads at once."""
    if w is not None:
        qk = _rms(qk, w, eps)
    return apply_rope(qk, cs)


def _qkv_prep(qkv: Tensor, w: Tensor | None, cs: Tensor, eps: float, H: int, G: int, D: int) -> tuple[Tensor, Tensor]:
    """Fused QKV output (B, T, (H+2G)D) -> q (B, T, H, D) and the new cache entries k|v (2, B, G, T, D)."""
    B, T = qkv.shape[0], qkv.shape[1]
    qk = _qk_rope(qkv[..., : (H + G) * D].view(B, T, H + G, D), w, cs, eps)
    v = qkv[..., (H + G) * D :].view(B, T, G, D)
    return qk[:, :, :H], torch.stack([qk[:, :, H:], v]).transpose(2, 3)


def _swiglu(h: Tensor, inter: int) -> Tensor:
    gate, up = h.split(inter, dim=-1)
    return F.silu(gate) * up


def _sample(logits: Tensor, temperature: Tensor, top_p: Tensor, top_k: Tensor, noise: Tensor) -> Tensor:
    """One draw from 1-D ``logits`` (fp32) with upstream's order: top-k, top-p on the untempered
    distribution (the first candidate always kept), then temperature. ``temperature <= 0`` is
    greedy. ``noise`` (width,) is Exp(1) noise: argmax(p / noise) is a multinomial draw (drawn by
    the caller so RNG stays outside compiled code). Options are 0-d tensors (graph-capturable).
    Returns a (1,) index into ``logits``."""
    width = noise.shape[0]
    vals, idx = torch.topk(logits, width)
    ar = torch.arange(width, device=logits.device)
    vals = vals.masked_fill(ar >= top_k, float("-inf"))
    cum = torch.cumsum(torch.softmax(vals, dim=-1), dim=-1)
    drop = (cum > top_p) & (ar > 0)
    vals = vals.masked_fill(drop, float("-inf"))
    probs = torch.softmax(vals / temperature.clamp(min=1e-5), dim=-1)
    pick = torch.argmax(probs / noise).view(1)
    pick = torch.where(temperature > 0, pick, torch.zeros_like(pick))
    return idx.gather(0, pick)


class _Ops:
    """The elementwise pieces of a decoder layer. On CUDA they are swapped for ``torch.compile``d
    versions (each fuses into one kernel) for one-position steps; prefill stays eager."""

    def __init__(self, compiled: bool) -> None:
        self.rms, self.add_rms, self.qkv_prep, self.swiglu, self.sample = _rms, _add_rms, _qkv_prep, _swiglu, _sample
        self.compiled = False
        if compiled:
            self.compile()

    def compile(self) -> None:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        c = lambda f: torch.compile(f, dynamic=False, fullgraph=True)  # noqa: E731
        self.rms, self.add_rms, self.qkv_prep, self.swiglu = c(_rms), c(_add_rms), c(_qkv_prep), c(_swiglu)
        self.sample = c(_sample)
        self.compiled = True


EAGER = _Ops(False)
