"""OmniVoice's network: a Qwen3 transformer with bidirectional attention over text and 8-codebook audio tokens.

Upstream (``OmniVoice(PreTrainedModel)``) wraps transformers' ``Qwen3Model`` (``llm.*``), sums the
per-codebook audio embeddings (``audio_embeddings``, offset by ``codebook * audio_vocab``) where a
position is audio and uses the text embedding elsewhere, and predicts every codebook with one
linear head (``audio_heads``). Attention is not causal: upstream passes a full boolean mask.

voxbox runs the same weights with its own forward: fused QKV and gate/up projections, and a
*packed* layout for classifier-free guidance — the conditional sequence (prompt + target) and the
unconditional one (target only) are concatenated into one token row, so every projection runs
once over both, and attention runs per segment without any mask (the two sequences never see
each other, as in upstream's padded batch with its block mask). RoPE positions restart at 0 in each
segment, as upstream's. Numerics follow transformers' Qwen3 (RMSNorm in float32, cast, then the
weight; rotary tables in float32 cast to the compute dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxbox.errors import ModelLoadError

__all__ = ["Backbone", "LMConfig"]


@dataclass(frozen=True)
class LMConfig:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float
    rope_theta: float
    attn_bias: bool
    codebooks: int
    audio_vocab: int
    mask_id: int

    @classmethod
    def from_json(cls, cfg: Mapping[str, Any]) -> LMConfig:
        """From upstream's ``config.json`` (``OmniVoiceConfig`` with a qwen3 ``llm_config``)."""
        llm = cfg.get("llm_config")
        if not isinstance(llm, Mapping):
            raise ModelLoadError("config.json has no llm_config (not an OmniVoice checkpoint)")
        if llm.get("model_type", "qwen3") != "qwen3":
            raise ModelLoadError(f"OmniVoice backbone {llm.get('model_type')!r} is not supported (expected qwen3)")
        rope = llm.get("rope_parameters") or llm.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ModelLoadError(f"rope type {rope.get('rope_type')!r} is not supported")
        try:
            heads = int(llm["num_attention_heads"])
            hidden = int(llm["hidden_size"])
            return cls(
                hidden=hidden, layers=int(llm["num_hidden_layers"]), heads=heads,
                kv_heads=int(llm.get("num_key_value_heads") or heads),
                head_dim=int(llm.get("head_dim") or hidden // heads), intermediate=int(llm["intermediate_size"]),
                vocab=int(llm["vocab_size"]), eps=float(llm.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta") or llm.get("rope_theta") or 1_000_000.0),
                attn_bias=bool(llm.get("attention_bias", False)), codebooks=int(cfg.get("num_audio_codebook", 8)),
                audio_vocab=int(cfg.get("audio_vocab_size", 1025)), mask_id=int(cfg.get("audio_mask_id", 1024)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"config.json llm_config is incomplete ({exc})") from exc


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Qwen3RMSNorm: normalise in float32, cast back, then scale."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.c = c
        q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
        self.qkv = nn.Linear(c.hidden, q + 2 * kv, bias=c.attn_bias)
        self.o = nn.Linear(q, c.hidden, bias=False)
        self.q_norm = nn.Parameter(torch.ones(c.head_dim))
        self.k_norm = nn.Parameter(torch.ones(c.head_dim))
        self.ln1 = nn.Parameter(torch.ones(c.hidden))
        self.ln2 = nn.Parameter(torch.ones(c.hidden))
        self.gate_up = nn.Linear(c.hidden, 2 * c.intermediate, bias=False)
        self.down = nn.Linear(c.intermediate, c.hidden, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segments: tuple[tuple[int, int], ...]
    ) -> torch.Tensor:
        c = self.c
        n = x.shape[0]
        qkv = self.qkv(rms_norm(x, self.ln1, c.eps))
        q, k, v = qkv.split((c.heads * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim), dim=-1)
        q = rms_norm(q.view(n, c.heads, c.head_dim), self.q_norm, c.eps)
        k = rms_norm(k.view(n, c.kv_heads, c.head_dim), self.k_norm, c.eps)
        cs, sn = cos[:, None, :], sin[:, None, :]
        q = q * cs + _rotate_half(q) * sn
        k = k * cs + _rotate_half(k) * sn
        v = v.view(n, c.kv_heads, c.head_dim)
        rep = c.heads // c.kv_heads
        outs = []
        for a, b in segments:
            qs = q[a:b].transpose(0, 1)[None]
            ks = k[a:b].transpose(0, 1).repeat_interleave(rep, dim=0)[None]
            vs = v[a:b].transpose(0, 1).repeat_interleave(rep, dim=0)[None]
            outs.append(F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1))
        att = torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
        x = x + self.o(att.reshape(n, c.heads * c.head_dim))
        gate, up = self.gate_up(rms_norm(x, self.ln2, c.eps)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class Backbone(nn.Module):
    """Embeddings, transformer layers and audio heads; ``hidden()`` over a packed token row."""

    offsets: torch.Tensor
    inv_freq: torch.Tensor

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.audio_embeddings = nn.Embedding(c.codebooks * c.audio_vocab, c.hidden)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.norm = nn.Parameter(torch.ones(c.hidden))
        self.audio_heads = nn.Linear(c.hidden, c.codebooks * c.audio_vocab, bias=False)
        self.register_buffer("offsets", torch.arange(c.codebooks) * c.audio_vocab, persistent=False)
        self.register_buffer(
            "inv_freq",
            1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim)),
            persistent=False,
        )

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape (S, head_dim) for integer ``positions``, computed in float32 as upstream."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def embed(self, ids: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """ids (codebooks, S) long, audio (S,) bool -> (S, hidden): text embedding of row 0, or the
        sum of the codebooks' audio embeddings where ``audio``."""
        text = self.embed_tokens(ids[0].masked_fill(audio, 0))  # audio positions: discarded below
        shifted = ids * audio[None, :] + self.offsets[:, None]
        sound = self.audio_embeddings(shifted).sum(dim=0)
        return torch.where(audio[:, None], sound, text)

    def hidden(self, ids: torch.Tensor, audio: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               segments: tuple[tuple[int, int], ...]) -> torch.Tensor:
        x = self.embed(ids, audio)
        for layer in self.layers:
            x = layer(x, cos, sin, segments)
        return x

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, hidden) -> (codebooks, N, audio_vocab) in float32 (upstream casts the logits)."""
        out = self.audio_heads(rms_norm(h, self.norm, self.c.eps)).float()
        return out.view(h.shape[0], self.c.codebooks, self.c.audio_vocab).transpose(0, 1)


def upstream_state(c: LMConfig, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream parameter names (``llm.layers.0.self_attn.q_proj.weight`` ...) -> this module's,
    fusing q/k/v and gate/up. Missing names raise ModelLoadError naming the first one."""
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        try:
            return state[name]
        except KeyError:
            raise ModelLoadError(f"OmniVoice checkpoint lacks {name!r}") from None

    out["embed_tokens.weight"] = take("llm.embed_tokens.weight")
    out["audio_embeddings.weight"] = take("audio_embeddings.weight")
    out["audio_heads.weight"] = take("audio_heads.weight")
    out["norm"] = take("llm.norm.weight")
    for i in range(c.layers):
        p = f"llm.layers.{i}."
        a = p + "self_attn."
        out[f"layers.{i}.qkv.weight"] = torch.cat([take(a + f"{n}_proj.weight") for n in "qkv"])
        if c.attn_bias:
            out[f"layers.{i}.qkv.bias"] = torch.cat([take(a + f"{n}_proj.bias") for n in "qkv"])
        out[f"layers.{i}.o.weight"] = take(a + "o_proj.weight")
        out[f"layers.{i}.q_norm"] = take(a + "q_norm.weight")
        out[f"layers.{i}.k_norm"] = take(a + "k_norm.weight")
        out[f"layers.{i}.ln1"] = take(p + "input_layernorm.weight")
        out[f"layers.{i}.ln2"] = take(p + "post_attention_layernorm.weight")
        out[f"layers.{i}.gate_up.weight"] = torch.cat(
            [take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")]
        )
        out[f"layers.{i}.down.weight"] = take(p + "mlp.down_proj.weight")
    return out


def to_upstream(c: LMConfig, model: Backbone) -> dict[str, torch.Tensor]:
    """This module's weights under upstream's names (the inverse of :func:`upstream_state`)."""
    q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
    s = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"llm.embed_tokens.weight": s["embed_tokens.weight"], "audio_embeddings.weight": s["audio_embeddings.weight"],
           "audio_heads.weight": s["audio_heads.weight"], "llm.norm.weight": s["norm"],
           "codebook_layer_offsets": torch.arange(c.codebooks) * c.audio_vocab}
    for i in range(c.layers):
        p, a = f"llm.layers.{i}.", f"llm.layers.{i}.self_attn."
        for name, part in zip("qkv", s[f"layers.{i}.qkv.weight"].split((q, kv, kv)), strict=True):
            out[a + f"{name}_proj.weight"] = part
        if c.attn_bias:
            for name, part in zip("qkv", s[f"layers.{i}.qkv.bias"].split((q, kv, kv)), strict=True):
                out[a + f"{name}_proj.bias"] = part
        out[a + "o_proj.weight"] = s[f"layers.{i}.o.weight"]
        out[a + "q_norm.weight"] = s[f"layers.{i}.q_norm"]
        out[a + "k_norm.weight"] = s[f"layers.{i}.k_norm"]
        out[p + "input_layernorm.weight"] = s[f"layers.{i}.ln1"]
        out[p + "post_attention_layernorm.weight"] = s[f"layers.{i}.ln2"]
        gate, up = s[f"layers.{i}.gate_up.weight"].chunk(2)
        out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
        out[p + "mlp.down_proj.weight"] = s[f"layers.{i}.down.weight"]
    return {k: v.contiguous() for k, v in out.items()}
