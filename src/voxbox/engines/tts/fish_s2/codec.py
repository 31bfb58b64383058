"""The S2-Pro codec: fish-speech's modified DAC (44.1 kHz, 2048 samples per code frame).

voxbox's own implementation of the published architecture (fish-speech ``modded_dac.py`` /
``rvq.py`` and descript-audio-codec's layers); module names follow ``codec.pth`` so its state
dict loads directly once weight norm is folded (``loader.fold_weight_norm``).

* encoder: causal convs with Snake activations, 4 strided blocks (2, 4, 8, 8) and a windowed
  causal transformer in the last block -> 1024-d latent at 86 Hz;
* quantizer: 2 x (causal stride-2 conv + ConvNeXt) down to 21.5 Hz, a windowed causal transformer,
  one semantic VQ (4096 codes) and a 9-codebook residual VQ (1024 codes) with factorised,
  l2-normalised lookups; decoding mirrors it (codes -> sum of projected code vectors ->
  transformer -> 2 x (transposed conv + ConvNeXt));
* decoder: causal conv, 4 upsampling blocks (8, 8, 4, 2) with dilated residual units, tanh.

Everything is causal (convs pad on the left, transposed convs trim on the right, attention is
windowed-causal), so a window of codes decoded with enough left context reproduces the full
decode's samples for its last frames, which is what streaming uses (through :class:`DecodeGraphs`
on a GPU).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxbox.engines.batched import next_pow2
from voxbox.engines.graphs import capture_graph

from .config import CodecConfig, CodecTransformerConfig
from .ops import apply_rope, rope_table

__all__ = ["PAD_FRAMES", "Codec", "DecodeGraphs"]

log = logging.getLogger(__name__)

#: On a GPU, codec calls are padded to one of these frame counts (and to a power-of-two count of
#: windows) so that a few shapes, each a CUDA graph, cover every window: codes appended on the
#: right leave the audio of the frames before them as it was (the codec is causal). Longer calls
#: keep their own length.
PAD_FRAMES = (4, 8, 16, 32, 48, 64, 80, 96, 128)


class Snake(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha
        return x + (a + 1e-9).reciprocal() * torch.sin(a * x).pow(2)


class CausalConv(nn.Module):
    """Conv1d padded on the left by (effective kernel - stride), plus what makes the last window whole."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, groups=groups)
        self.stride = stride
        self.k_eff = (kernel - 1) * dilation + 1
        self.pad = self.k_eff - stride

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-1]
        frames = (n - self.k_eff + self.pad) / self.stride + 1
        extra = (math.ceil(frames) - 1) * self.stride + (self.k_eff - self.pad) - n
        if self.pad or extra:
            x = F.pad(x, (self.pad, extra))
        return self.conv(x)


class CausalConvT(nn.Module):
    """ConvTranspose1d with the (kernel - stride) overhang trimmed on the right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride=stride)
        self.trim = kernel - stride

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim), CausalConv(dim, dim, 7, dilation=dilation), Snake(dim), CausalConv(dim, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        cut = x.shape[-1] - y.shape[-1]
        if cut > 0:
            x = x[..., :-cut]
        return x + y


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class _Scale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-2))


class _Attn(nn.Module):
    def __init__(self, c: CodecTransformerConfig) -> None:
        super().__init__()
        self.h, self.d = c.n_head, c.head_dim
        self.wqkv = nn.Linear(c.dim, 3 * c.n_head * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_head * c.head_dim, c.dim, bias=False)

    def forward(self, x: Tensor, cs: Tensor, mask: Tensor) -> Tensor:
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.h, self.d).unbind(2)
        q, k = apply_rope(q, cs), apply_rope(k, cs)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.h * self.d))


class _FF(nn.Module):
    def __init__(self, c: CodecTransformerConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.intermediate_size, bias=False)
        self.w3 = nn.Linear(c.dim, c.intermediate_size, bias=False)
        self.w2 = nn.Linear(c.intermediate_size, c.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class _TBlock(nn.Module):
    def __init__(self, c: CodecTransformerConfig) -> None:
        super().__init__()
        self.attention = _Attn(c)
        self.feed_forward = _FF(c)
        self.attention_norm = _RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = _RMSNorm(c.dim, c.norm_eps)
        self.attention_layer_scale = _Scale(c.dim)
        self.ffn_layer_scale = _Scale(c.dim)

    def forward(self, x: Tensor, cs: Tensor, mask: Tensor) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cs, mask) * self.attention_layer_scale.gamma
        return h + self.feed_forward(self.ffn_norm(h)) * self.ffn_layer_scale.gamma


class WindowedTransformer(nn.Module):
    """Causal transformer over (B, C, T) whose positions see at most ``window`` positions back."""

    def __init__(self, c: CodecTransformerConfig, input_dim: int) -> None:
        super().__init__()
        self.c = c
        self.layers = nn.ModuleList(_TBlock(c) for _ in range(c.n_layer))
        self.norm = _RMSNorm(c.dim, c.norm_eps)
        self.input_proj = nn.Linear(input_dim, c.dim) if input_dim != c.dim else nn.Identity()
        self.output_proj = nn.Linear(c.dim, input_dim) if input_dim != c.dim else nn.Identity()
        self._rope: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_proj(x.transpose(1, 2))
        T = x.shape[1]
        if self._rope is None or self._rope.shape[0] < T or self._rope.device != x.device:
            self._rope = rope_table(max(T, 1024), self.c.head_dim, self.c.rope_base).to(x.device)
        i = torch.arange(T, device=x.device)
        mask = i[None, :] <= i[:, None]
        if self.c.window_size:
            mask = mask & (i[None, :] > i[:, None] - self.c.window_size)
        cs = self._rope[:T]
        for layer in self.layers:
            x = layer(x, cs, mask)
        return self.output_proj(self.norm(x)).transpose(1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VQ(nn.Module):
    def __init__(self, dim: int, size: int, cdim: int) -> None:
        super().__init__()
        self.in_proj = nn.Conv1d(dim, cdim, 1)
        self.out_proj = nn.Conv1d(cdim, dim, 1)
        self.codebook = nn.Embedding(size, cdim)

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, T) -> (quantised (B, D, T), indices (B, T))."""
        ze = self.in_proj(z)
        enc = F.normalize(ze.transpose(1, 2).float(), dim=-1)
        cb = F.normalize(self.codebook.weight.float(), dim=-1)
        idx = (enc @ cb.T).argmax(-1)  # nearest by cosine (l2 on normalised vectors)
        return self.decode(idx), idx

    def decode(self, idx: Tensor) -> Tensor:
        return self.out_proj(self.codebook(idx).transpose(1, 2))


class RVQ(nn.Module):
    def __init__(self, dim: int, n: int, size: int, cdim: int) -> None:
        super().__init__()
        self.size = size
        self.quantizers = nn.ModuleList(VQ(dim, size, cdim) for _ in range(n))

    def encode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        out, res, codes = torch.zeros_like(z), z, []
        for q in cast("list[VQ]", self.quantizers):
            zq, idx = q.encode(res)
            out, res = out + zq, res - zq
            codes.append(idx)
        return out, torch.stack(codes, 1)

    def decode(self, codes: Tensor) -> Tensor:
        z: Tensor | int = 0
        for i, q in enumerate(cast("list[VQ]", self.quantizers[: codes.shape[1]])):
            z = z + q.decode(codes[:, i])
        return z  # type: ignore[return-value]  # an int 0 only for codes with no codebooks


class Quantizer(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        d = c.latent
        self.semantic_quantizer = RVQ(d, 1, c.semantic_codebook_size, c.codebook_dim)
        self.quantizer = RVQ(d, c.n_codebooks, c.codebook_size, c.codebook_dim)
        self.downsample = nn.Sequential(
            *[nn.Sequential(CausalConv(d, d, f, stride=f), ConvNeXt(d)) for f in c.downsample_factor]
        )
        self.upsample = nn.Sequential(
            *[nn.Sequential(CausalConvT(d, d, f, f), ConvNeXt(d)) for f in reversed(c.downsample_factor)]
        )
        self.pre_module = WindowedTransformer(c.quantizer_transformer, d)
        self.post_module = WindowedTransformer(c.quantizer_transformer, d)

    def encode(self, z: Tensor) -> Tensor:
        z = self.pre_module(self.downsample(z))
        zs, sem = self.semantic_quantizer.encode(z)
        _, res = self.quantizer.encode(z - zs)
        return torch.cat([sem, res], 1)

    def decode(self, codes: Tensor) -> Tensor:
        sem = codes[:, :1].clamp(0, self.semantic_quantizer.size - 1)
        res = codes[:, 1:].clamp(0, self.quantizer.size - 1)
        z = self.semantic_quantizer.decode(sem) + self.quantizer.decode(res)
        return self.upsample(self.post_module(z))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int, n_t: int, c: CodecConfig) -> None:
        super().__init__()
        half = dim // 2
        t: nn.Module = nn.Identity()
        if n_t:
            tc = CodecTransformerConfig(
                n_layer=n_t, n_head=dim // 64, dim=dim, intermediate_size=dim * 3,
                head_dim=c.encoder_transformer_head_dim, window_size=c.encoder_transformer_window,
                rope_base=c.quantizer_transformer.rope_base, norm_eps=c.quantizer_transformer.norm_eps,
            )
            t = WindowedTransformer(tc, dim)
        self.block = nn.Sequential(ResidualUnit(half, 1), ResidualUnit(half, 3), ResidualUnit(half, 9), Snake(half),
                                   CausalConv(half, dim, 2 * stride, stride=stride), t)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        d = c.encoder_dim
        blocks: list[nn.Module] = [CausalConv(1, d, 7)]
        for stride, n_t in zip(c.encoder_rates, c.encoder_transformer_layers, strict=False):
            d *= 2
            blocks.append(EncoderBlock(d, stride, n_t, c))
        blocks += [Snake(d), CausalConv(d, c.latent, 3)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(Snake(cin), CausalConvT(cin, cout, 2 * stride, stride),
                                   ResidualUnit(cout, 1), ResidualUnit(cout, 3), ResidualUnit(cout, 9))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        ch = c.decoder_dim
        layers: list[nn.Module] = [CausalConv(c.latent, ch, 7)]
        for i, stride in enumerate(c.decoder_rates):
            layers.append(DecoderBlock(ch // 2**i, ch // 2 ** (i + 1), stride))
        out = ch // 2 ** len(c.decoder_rates)
        layers += [Snake(out), CausalConv(out, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Codec(nn.Module):
    def __init__(self, c: CodecConfig) -> None:
        super().__init__()
        self.config = c
        self.encoder = Encoder(c)
        self.quantizer = Quantizer(c)
        self.decoder = Decoder(c)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_length(self) -> int:
        return self.config.frame_length

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """Mono audio (T,) in [-1, 1] at the codec's rate -> codes (1 + n_codebooks, frames), long."""
        p = next(self.parameters())
        x = audio.to(device=p.device, dtype=p.dtype).view(1, 1, -1)
        fl = self.frame_length
        x = F.pad(x, (0, math.ceil(x.shape[-1] / fl) * fl - x.shape[-1]))
        return self.quantizer.encode(self.encoder(x))[0]

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (1 + n_codebooks, frames) -> audio (frames * frame_length,) float32 on the codec's device."""
        p = next(self.parameters())
        z = self.quantizer.decode(codes.to(p.device).long()[None])
        return self.decoder(z.to(p.dtype))[0, 0].float()

    @torch.no_grad()
    def decode_batch(self, codes: Tensor) -> Tensor:
        """codes (B, 1 + n_codebooks, frames) -> audio (B, frames * frame_length) float32: one call for
        B windows of one shape (the batched path); each row equals :meth:`decode` of it."""
        p = next(self.parameters())
        z = self.quantizer.decode(codes.to(p.device).long())
        return self.decoder(z.to(p.dtype))[:, 0].float()


class DecodeGraphs:
    """:meth:`Codec.decode_batch` replayed from CUDA graphs, one per padded codes shape (windows,
    codebooks, frames), captured on first use for up to ``limit`` shapes (eager beyond them, and
    on a CPU). Streaming decodes the same few windows over and over (the first one; the next ones
    while the left context fills; then context + window frames; a shorter last one), and eagerly
    each call is some 700 small kernels issued from Python: about 15 ms for the first 4 frames on
    an H200, where the GPU works for a fraction of that. A lock serialises callers (the static
    buffers are shared)."""

    def __init__(self, codec: Codec, limit: int = 48) -> None:
        self.codec, self.limit = codec, limit
        self.cuda = next(codec.parameters()).device.type == "cuda"
        self.graphs: dict[tuple[int, ...], tuple[Any, Tensor, Tensor]] = {}
        self.error: str | None = None  # why capturing was given up (then eager from there on)
        self._lock = threading.Lock()
        self._pool: Any = None

    @property
    def active(self) -> bool:
        """Whether calls replay graphs (a GPU codec whose captures work)."""
        return self.cuda and self.error is None

    @staticmethod
    def padded(windows: int, frames: int) -> tuple[int, int]:
        """The shape a call of ``windows`` x ``frames`` is padded to (see :data:`PAD_FRAMES`)."""
        return next_pow2(windows), next((f for f in PAD_FRAMES if f >= frames), frames)

    def decode(self, codes: Tensor, *, pad: bool | None = None) -> Tensor:
        """codes (B, 1 + n_codebooks, frames), long, on the codec's device -> audio (B, frames *
        frame_length) float32, the unpadded call's. ``pad`` (default: when replaying graphs) pads
        the call to :meth:`padded`'s shape first."""
        b, _, t = codes.shape
        if pad if pad is not None else self.active:
            bp, tp = self.padded(b, t)
            if (bp, tp) != (b, t):
                codes = F.pad(codes, (0, tp - t, 0, 0, 0, bp - b))
        return self._decode(codes)[:b, : t * self.codec.frame_length]

    def _decode(self, codes: Tensor) -> Tensor:
        if codes.device.type != "cuda" or self.error is not None:
            return self.codec.decode_batch(codes)
        key = tuple(codes.shape)
        with self._lock, torch.inference_mode():  # the static buffers are inference tensors, whoever calls
            entry = self.graphs.get(key)
            if entry is None:
                if len(self.graphs) >= self.limit:
                    return self.codec.decode_batch(codes)
                entry = self._capture(codes)
                if entry is None:
                    return self.codec.decode_batch(codes)
            g, x, y = entry
            x.copy_(codes)
            g.replay()
            return y.clone()

    def _capture(self, codes: Tensor) -> tuple[Any, Tensor, Tensor] | None:
        x = codes.long().clone()
        out: dict[str, Tensor] = {}

        def run() -> None:
            out["y"] = self.codec.decode_batch(x)

        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            g = capture_graph(run, (), self._pool, mode="thread_local")
        except Exception as exc:  # noqa: BLE001 - a codec that cannot be captured decodes eagerly
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("fish-s2 codec CUDA graph capture failed, decoding eagerly: %s", self.error)
            return None
        entry = self.graphs[tuple(codes.shape)] = (g, x, out["y"])
        return entry
