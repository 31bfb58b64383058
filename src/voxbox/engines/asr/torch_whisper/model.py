"""Whisper encoder-decoder in plain PyTorch with a static KV cache.

Module and parameter names follow ``transformers``' ``WhisperForConditionalGeneration`` (under
``model.``), so an HF ``model.safetensors`` loads with ``load_state_dict(assign=True)`` onto a model
built on the meta device. The decoder works on caller-owned static buffers (:class:`KVCache`):
cross-attention K/V are computed once per window and the self-attention cache is written in place at
a position held in a device tensor, so one decode step can be captured in a CUDA graph and replayed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KVCache", "Whisper", "WhisperDims"]


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int
    vocab_size: int
    d_model: int
    encoder_layers: int
    encoder_heads: int
    encoder_ffn: int
    decoder_layers: int
    decoder_heads: int
    decoder_ffn: int
    max_source_positions: int = 1500
    max_target_positions: int = 448
    activation: str = "gelu"

    @classmethod
    def from_config(cls, cfg: dict) -> WhisperDims:
        return cls(
            n_mels=cfg.get("num_mel_bins", 80),
            vocab_size=cfg["vocab_size"],
            d_model=cfg["d_model"],
            encoder_layers=cfg["encoder_layers"],
            encoder_heads=cfg["encoder_attention_heads"],
            encoder_ffn=cfg["encoder_ffn_dim"],
            decoder_layers=cfg["decoder_layers"],
            decoder_heads=cfg["decoder_attention_heads"],
            decoder_ffn=cfg["decoder_ffn_dim"],
            max_source_positions=cfg.get("max_source_positions", 1500),
            max_target_positions=cfg.get("max_target_positions", 448),
            activation=cfg.get("activation_function", "gelu"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> WhisperDims:
        return cls.from_config(json.loads(Path(path).read_text()))


def _act(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}")


def _index_copy(dst: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.index_copy_(dim, index, src)``, moved as 8-byte words where the layouts allow (the
    generic index kernel moves one element per thread step: 2-byte ones reach a fraction of the
    memory bandwidth)."""
    if dim < dst.dim() - 1 and dst.element_size() < 8:
        try:
            dst, src = dst.view(torch.int64), src.view(torch.int64)
        except RuntimeError:  # a last dimension not contiguous or not a whole number of words
            pass
    dst.index_copy_(dim, index, src)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = d // heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, Dh)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, T, Dh) -> (B, T, d)
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(self.q_proj(x) * self.scaling)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # full (encoder) self-attention
        k, v = self.keys_values(x)
        o = F.scaled_dot_product_attention(self.query(x), k, v, scale=1.0)
        return self.out_proj(self.merge(o))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, act):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.d_model
        act = _act(dims.activation)
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(dims.max_source_positions, d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, dims.encoder_heads, dims.encoder_ffn, act) for _ in range(dims.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d)
        self.act = act

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, 3000) -> (B, 1500, d)
        x = self.act(self.conv1(mel))
        x = self.act(self.conv2(x)).transpose(1, 2)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


@dataclass
class KVCache:
    """Static decoder buffers for ``batch`` rows: self-attention K and V stacked, shape
    (layers, 2, batch, heads, max_len, head_dim), and the window's cross-attention K/V,
    (layers, batch, heads, source_len, head_dim)."""

    self_kv: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    @property
    def batch(self) -> int:
        return self.self_kv.shape[2]

    @property
    def max_len(self) -> int:
        return self.self_kv.shape[4]

    def rows(self, n: int) -> KVCache:
        """A view of the first ``n`` rows (continuous batching steps only the occupied slots)."""
        return KVCache(self.self_kv[:, :, :n], self.cross_k[:, :n], self.cross_v[:, :n])

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i takes row ``index[i]``'s self-attention history (in place)."""
        self.self_kv.copy_(self.self_kv.index_select(2, index))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, act):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = act
        # set by Whisper.fuse_for_decoding(): (weight, bias) with the query scale folded in
        self.fused_qkv: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fused_cross_q: tuple[torch.Tensor, torch.Tensor] | None = None

    def self_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q (B, H, T, Dh), stacked k/v (2, B, H, T, Dh)) for self-attention."""
        attn = self.self_attn
        if self.fused_qkv is None:
            k, v = attn.keys_values(h)
            return attn.query(h), torch.stack((k, v))
        b, t, _ = h.shape
        qkv = F.linear(h, *self.fused_qkv).view(b, t, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1:]

    def cross_query(self, h: torch.Tensor) -> torch.Tensor:
        if self.fused_cross_q is None:
            return self.encoder_attn.query(h)
        return self.encoder_attn.split(F.linear(h, *self.fused_cross_q))

    def cross_and_ffn(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      scores: dict[int, torch.Tensor] | None = None, key: int = 0) -> torch.Tensor:
        """The layer after its self-attention: cross-attention over ``k``/``v`` (B, H, source, Dh),
        then the feed-forward block, each with its residual. ``scores[key]`` gets the
        cross-attention scores before the softmax, float32 (word alignment)."""
        q = self.cross_query(self.encoder_attn_layer_norm(x))
        if scores is not None:
            scores[key] = (q @ k.transpose(-1, -2)).float()  # the query carries the scale
        o = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        x = x + self.encoder_attn.out_proj(self.encoder_attn.merge(o))
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class Decoder(nn.Module):
    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.d_model
        act = _act(dims.activation)
        self.embed_tokens = nn.Embedding(dims.vocab_size, d)
        self.embed_positions = nn.Embedding(dims.max_target_positions, d)
        self.layers = nn.ModuleList(
            DecoderLayer(d, dims.decoder_heads, dims.decoder_ffn, act) for _ in range(dims.decoder_layers)
        )
        self.layer_norm = nn.LayerNorm(d)

    @property
    def blocks(self) -> Sequence[DecoderLayer]:
        """``layers``, typed."""
        return cast("Sequence[DecoderLayer]", self.layers)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor | int, cache: KVCache, kv_len: int,
                cross_scores: dict[int, torch.Tensor] | None = None, *, per_row: bool = False) -> torch.Tensor:
        """Run ``tokens`` (B, T) placed at positions ``pos .. pos+T-1``; returns hidden (B, T, d).

        ``pos`` is a python int (prefill, T >= 1, causal over the first ``pos+T`` positions) or a
        one-element int64 device tensor (single-token step; graph-safe). With ``per_row`` (T = 1),
        ``pos`` is a (B,) int64 device tensor: row b's token sits at its own position ``pos[b]``
        (continuous batching: sequences at different lengths in one step; graph-safe). ``kv_len``
        (> every position) is how much of the self-attention cache is attended; positions after a
        row's own are masked. ``cross_scores``: for each layer index it has as a key, the layer's
        cross-attention scores before the softmax, (B, heads, T, source), float32, are stored
        there (word alignment).
        """
        t = tokens.shape[1]
        x = self.embed_tokens(tokens)  # (transformers defines scale_embedding but never applies it)
        row_index: torch.Tensor | None = None
        idx: torch.Tensor
        if per_row:
            assert isinstance(pos, torch.Tensor)
            x = x + self.embed_positions.weight.index_select(0, pos)[:, None]
            idx = pos
            mask = (torch.arange(kv_len, device=tokens.device)[None, :] <= pos[:, None])[:, None, None]  # (B,1,1,kv)
        else:
            if isinstance(pos, int):
                x = x + self.embed_positions.weight[pos : pos + t]
                idx = torch.arange(pos, pos + t, device=tokens.device)
                q_pos = idx[:, None]
            else:
                x = x + self.embed_positions.weight.index_select(0, pos)
                idx = pos
                q_pos = pos[:, None]
            mask = torch.arange(kv_len, device=tokens.device)[None, :] <= q_pos  # (T, kv_len)
        for i, layer in enumerate(self.blocks):
            h = layer.self_attn_layer_norm(x)
            q, kv = layer.self_qkv(h)
            if per_row:  # (2, B, H, 1, Dh) written at each row's own position
                if row_index is None:
                    row_index = idx.view(1, -1, 1, 1, 1).expand(kv.shape)
                cache.self_kv[i].scatter_(3, row_index, kv)
            else:
                cache.self_kv[i].index_copy_(3, idx, kv)
            o = F.scaled_dot_product_attention(
                q, cache.self_kv[i, 0, :, :, :kv_len], cache.self_kv[i, 1, :, :, :kv_len], attn_mask=mask, scale=1.0
            )
            x = x + layer.self_attn.out_proj(layer.self_attn.merge(o))
            scores = cross_scores if cross_scores is not None and i in cross_scores else None
            x = layer.cross_and_ffn(x, cache.cross_k[i], cache.cross_v[i], scores, i)
        return self.layer_norm(x)

    def prefill_rows(self, tokens: torch.Tensor, enc: torch.Tensor, cache: KVCache, rows: torch.Tensor) -> torch.Tensor:
        """Prompts ``tokens`` (B, T) at positions 0 .. T-1 for cache rows ``rows`` ((B,) int64 device
        tensor, any slots of ``cache``), with their encoder output ``enc`` (B, source, d); returns
        hidden (B, T, d). Each layer's cross-attention K/V is projected from ``enc`` and written
        into those rows on the way, as is the prompt's self-attention K/V, so no scratch cache is
        needed. Graph-safe: which slots is data (``rows``), not shapes."""
        t = tokens.shape[1]
        x = self.embed_tokens(tokens) + self.embed_positions.weight[:t]
        ar = torch.arange(t, device=tokens.device)
        mask = ar[None, :] <= ar[:, None]  # (T, T), as forward's prefill mask with kv_len = T
        for i, layer in enumerate(self.blocks):
            q, kv = layer.self_qkv(layer.self_attn_layer_norm(x))
            _index_copy(cache.self_kv[i, :, :, :, :t], 1, rows, kv)
            o = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, scale=1.0)
            x = x + layer.self_attn.out_proj(layer.self_attn.merge(o))
            k, v = layer.encoder_attn.keys_values(enc)
            _index_copy(cache.cross_k[i], 0, rows, k)
            _index_copy(cache.cross_v[i], 0, rows, v)
            x = layer.cross_and_ffn(x, k, v)
        return self.layer_norm(x)


class _Body(nn.Module):
    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.encoder = Encoder(dims)
        self.decoder = Decoder(dims)


class Whisper(nn.Module):
    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        self.model = _Body(dims)

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def decoder(self) -> Decoder:
        return self.model.decoder

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output projection (tied to the token embedding), as float32."""
        return F.linear(hidden, self.decoder.embed_tokens.weight).float()

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        d = self.dims
        p = self.decoder.embed_tokens.weight
        device = device or p.device
        dtype = dtype or p.dtype
        max_len = max_len or d.max_target_positions
        hd = d.d_model // d.decoder_heads
        shape_cross = (d.decoder_layers, batch, d.decoder_heads, d.max_source_positions, hd)
        cross = (torch.zeros(shape_cross, device=device, dtype=dtype) for _ in range(2))
        return KVCache(self.new_self_kv(batch, max_len, device, dtype), *cross)

    def new_self_kv(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> torch.Tensor:
        """Zeroed self-attention K/V for ``batch`` rows: (layers, 2, batch, heads, max_len, head_dim)."""
        d = self.dims
        p = self.decoder.embed_tokens.weight
        shape = (d.decoder_layers, 2, batch, d.decoder_heads, max_len or d.max_target_positions,
                 d.d_model // d.decoder_heads)
        return torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)

    @torch.no_grad()
    def fuse_for_decoding(self) -> None:
        """Fewer kernels per decode step (GPU): one Q/K/V GEMM for self-attention and the query
        scale folded into the weights. Replaces the decoder's self-attention Q/K/V and
        cross-attention Q projections (their memory is released unless shared elsewhere)."""
        for layer in self.decoder.blocks:
            a, c = layer.self_attn, layer.encoder_attn
            if layer.fused_qkv is None:
                w = torch.cat([a.q_proj.weight * a.scaling, a.k_proj.weight, a.v_proj.weight])
                b = torch.cat([a.q_proj.bias * a.scaling, torch.zeros_like(a.v_proj.bias), a.v_proj.bias])
                layer.fused_qkv = (w, b)
                a.q_proj = a.k_proj = a.v_proj = None  # type: ignore[assignment]  # fused: unused now
            if layer.fused_cross_q is None:
                layer.fused_cross_q = (c.q_proj.weight * c.scaling, c.q_proj.bias * c.scaling)
                c.q_proj = None  # type: ignore[assignment]  # fused: unused now

    def set_cross(self, cache: KVCache, enc: torch.Tensor) -> None:
        """Fill the cross-attention K/V for encoder output ``enc`` (cache.batch rows)."""
        for i, layer in enumerate(self.decoder.blocks):
            k, v = layer.encoder_attn.keys_values(enc)
            cache.cross_k[i].copy_(k)
            cache.cross_v[i].copy_(v)


def load_weights(model: Whisper, state: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> None:
    """Assign ``state`` (HF names) to a meta-device ``model``: one copy of the weights in memory."""
    state = {k: v for k, v in state.items() if k != "proj_out.weight"}  # tied to embed_tokens
    for k in list(state):
        state[k] = state[k].to(device=device, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the Whisper layout: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
