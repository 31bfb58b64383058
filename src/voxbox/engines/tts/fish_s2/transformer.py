"""The transformer modules of Fish S2-Pro's dual-AR model (parameters and one stacked forward).

``SlowAR`` (checkpoint prefix ``text_model.model.``) and ``FastAR`` (``audio_decoder.``) are
Qwen3-style stacks of ``Block``: GQA ``Attention`` with fused QKV, per-head q/k RMSNorm and
interleaved RoPE over static KV caches, and a SwiGLU ``FeedForward``. ``run_layers`` runs a stack
over its caches then the final norm. Attention is ``scaled_dot_product_attention`` with explicit
masks (no flash-attn), so the same code runs on CUDA, ROCm and CPU. The elementwise parts come
from ``ops`` (eager or compiled); ``model.DualARRunner`` owns the caches and drives the stacks.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TransformerConfig
from .ops import EAGER, _Ops, _rms

__all__ = ["FastAR", "SlowAR", "run_layers"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return _rms(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = c.n_head, c.n_local_heads, c.head_dim
        self.eps = c.norm_eps
        self.wqkv = nn.Linear(c.dim, (c.n_head + 2 * c.n_local_heads) * c.head_dim, bias=c.attention_qkv_bias)
        self.wo = nn.Linear(c.n_head * c.head_dim, c.dim, bias=c.attention_o_bias)
        self.qk_norm = c.attention_qk_norm
        if self.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.norm_eps)
        self._qk_w: Tensor | None = None

    def qk_weight(self) -> Tensor | None:
        """q_norm's weight for each q head stacked over k_norm's for each k head (cached)."""
        if not self.qk_norm:
            return None
        w = self._qk_w
        if w is None or w.device != self.q_norm.weight.device or w.dtype != self.q_norm.weight.dtype:
            H, G, D = self.n_head, self.n_kv, self.head_dim
            w = torch.cat(
                [self.q_norm.weight.detach().expand(H, D), self.k_norm.weight.detach().expand(G, D)]
            ).contiguous()
            self._qk_w = w
        return w

    def forward(self, x: Tensor, cs: Tensor, pos: Tensor, cache: Tensor, span: int, mask: Tensor,
                ops: _Ops = EAGER) -> Tensor:
        """x: (B, T, dim); cache: (2, B, n_kv, S, head_dim) keys|values; pos: (T,) slots to write;
        attends cache[..., :span, :] under ``mask`` (bool True = attend, or additive; (T, span)
        or broadcastable)."""
        B, T, _ = x.shape
        H, G, D = self.n_head, self.n_kv, self.head_dim
        q, kv = ops.qkv_prep(self.wqkv(x), self.qk_weight(), cs, self.eps, H, G, D)
        cache.index_copy_(3, pos, kv)
        keys, vals = cache[0, :, :, :span], cache[1, :, :, :span]
        if T == 1:
            # GQA at one query position: each KV head's query heads act as that many query rows.
            qg = q.reshape(B, G, H // G, D)
            y = F.scaled_dot_product_attention(qg, keys, vals, attn_mask=mask.view(1, 1, 1, span))
            y = y.reshape(B, 1, H * D)
        else:
            rep = H // G
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys.repeat_interleave(rep, 1), vals.repeat_interleave(rep, 1),
                attn_mask=mask.view(1, 1, T, span))
            y = y.transpose(1, 2).reshape(B, T, H * D)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU with the gate and up projections stored as one matrix (``w13`` = [w1; w3])."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.inter = c.intermediate_size
        self.w13 = nn.Linear(c.dim, 2 * c.intermediate_size, bias=False)
        self.w2 = nn.Linear(c.intermediate_size, c.dim, bias=False)

    def forward(self, x: Tensor, ops: _Ops = EAGER) -> Tensor:
        return self.w2(ops.swiglu(self.w13(x), self.inter))


class Block(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.eps = c.norm_eps

    def forward(self, x: Tensor, delta: Tensor | None, cs: Tensor, pos: Tensor, cache: Tensor, span: int,
                mask: Tensor, ops: _Ops = EAGER) -> tuple[Tensor, Tensor]:
        """Residual stream ``x`` plus the previous layer's pending ``delta`` (None for the first
        layer) -> (x', delta'): the layer's output is x' + delta', added by the next norm."""
        if delta is None:
            n = ops.rms(x, self.attention_norm.weight, self.eps)
        else:
            x, n = ops.add_rms(x, delta, self.attention_norm.weight, self.eps)
        a = self.attention(n, cs, pos, cache, span, mask, ops)
        h, n = ops.add_rms(x, a, self.ffn_norm.weight, self.eps)
        return h, self.feed_forward(n, ops)


def run_layers(layers: Iterable[nn.Module], caches: Iterable[Tensor], x: Tensor, cs: Tensor, pos: Tensor, span: int,
               mask: Tensor, norm_w: Tensor, eps: float, ops: _Ops = EAGER) -> Tensor:
    """A stack of blocks over static caches, then the final RMSNorm."""
    d = None
    for layer, cache in zip(layers, caches, strict=True):
        x, d = layer(x, d, cs, pos, cache, span, mask, ops)
    if d is None:
        return ops.rms(x, norm_w, eps)
    return ops.add_rms(x, d, norm_w, eps)[1]


class SlowAR(nn.Module):
    """The text/semantic transformer (checkpoint prefix ``text_model.model.``)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.config = c
        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        if not c.tie_word_embeddings:
            self.output = nn.Linear(c.dim, c.vocab_size, bias=False)

    def head_weight(self) -> Tensor:
        return self.embeddings.weight if self.config.tie_word_embeddings else self.output.weight


class FastAR(nn.Module):
    """The codebook transformer (checkpoint prefix ``audio_decoder.``)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        assert c.num_codebooks and c.text_dim
        self.config = c
        self.project_in = nn.Linear(c.text_dim, c.dim) if c.text_dim != c.dim else nn.Identity()
        self.codebook_embeddings = nn.Embedding(c.vocab_size * c.num_codebooks, c.text_dim)
        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
