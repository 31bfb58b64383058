"""OmniVoice's audio codec (the Higgs Audio v2 tokenizer, ``audio_tokenizer/`` in the checkpoint).

Upstream uses transformers' ``HiggsAudioV2TokenizerModel``, whose module imports torchaudio (for
one resample call) and so cannot be imported here. Its parts can: the acoustic encoder and
decoder are transformers' ``DacEncoder``/``DacDecoder`` (with Higgs' two tweaks: transposed
convolutions get ``output_padding = stride % 2`` and the final tanh is dropped), the semantic
model is transformers' ``HubertModel``. The rest — the semantic encoder convolutions, the
residual vector quantizer and the glue — is small and written here against the same parameter
names, so ``audio_tokenizer/model.safetensors`` loads as is.

* ``decode(codes)`` (codebooks, frames) -> samples: codebook look-ups summed over codebooks,
  ``fc2``, the DAC decoder. ``hop_length`` samples per frame, frame-aligned.
* ``decode_windows`` decodes frame windows with ``context`` frames of overlap on each side and
  keeps each window's own samples: the decoder is not causal, so a window needs its neighbours;
  with the context covering the receptive field the pieces join to the one-call decode.
* ``encode(samples)`` (model rate) -> codes: HuBERT features at the semantic rate (resampled with
  voxbox's PyAV resampler where upstream uses torchaudio's; rates equal: no resampling), the
  semantic convolutions, the DAC encoder, ``fc``, residual quantization.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Codec", "Decoder", "Encoder", "build_decoder", "build_encoder", "fold_weight_norm"]


class _ResUnit(nn.Module):
    def __init__(self, cfg: Any, channels: int, dilation: int) -> None:
        super().__init__()
        k = cfg.unit_kernel_size
        self.conv1 = nn.Conv1d(channels, channels, k, padding=((k - 1) // 2) * dilation, dilation=dilation, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


class _SemBlock(nn.Module):
    def __init__(self, cfg: Any, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res_units = nn.ModuleList(_ResUnit(cfg, cin, d) for d in cfg.block_dilations)
        kernel = 3 if stride == 1 else 2 * stride
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.res_units:
            x = unit(x)
        return self.conv(x)


class SemanticEncoder(nn.Module):
    """Convolutions over the averaged HuBERT states (``encoder_semantic.*``)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        h = cfg.semantic_hidden_size
        self.conv = nn.Conv1d(h, h, cfg.kernel_size, 1, cfg.kernel_size // 2, bias=False)
        blocks, cin = [], h
        for ratio, stride in zip(cfg.channel_ratios, cfg.strides, strict=False):
            cout = int(h * ratio)
            blocks.append(_SemBlock(cfg, cin, cout, stride))
            cin = cout
        self.conv_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for block in self.conv_blocks:
            x = block(x)
        return x


class _Codebook(nn.Module):
    embed: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("embed", torch.zeros(size, dim))


class _Quantizer(nn.Module):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.codebook = _Codebook(cfg.codebook_size, cfg.codebook_dim)
        self.project_in = nn.Linear(cfg.hidden_size, cfg.codebook_dim)
        self.project_out = nn.Linear(cfg.codebook_dim, cfg.hidden_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (frames, hidden) -> nearest code per frame (Euclidean; upstream's expression)."""
        h = self.project_in(x)
        e = self.codebook.embed.t()
        dist = -(h.pow(2).sum(1, keepdim=True) - 2 * h @ e + e.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(codes, self.codebook.embed))


class _RVQ(nn.Module):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(_Quantizer(cfg) for _ in range(cfg.num_quantizers))

    def levels(self, n: int) -> list[_Quantizer]:
        return [q for q in list(self.quantizers)[:n] if isinstance(q, _Quantizer)]


class Decoder(nn.Module):
    """``quantizer`` + ``fc2`` + ``acoustic_decoder``: the decode path's parameters, upstream names."""

    def __init__(self, cfg: Any) -> None:
        from transformers.models.dac.modeling_dac import DacDecoder

        super().__init__()
        self.quantizer = _RVQ(cfg)
        self.fc2 = nn.Linear(cfg.hidden_size, cfg.acoustic_model_config.hidden_size)
        self.acoustic_decoder = DacDecoder(cfg.acoustic_model_config)
        for mod in self.acoustic_decoder.modules():  # Higgs' DAC: odd strides get output padding, no tanh
            if isinstance(mod, nn.ConvTranspose1d):
                mod.output_padding = (mod.stride[0] % 2,)
        setattr(self.acoustic_decoder, "tanh", nn.Identity())  # noqa: B010 - replaces a typed submodule


class Encoder(nn.Module):
    """``semantic_model`` (HuBERT) + ``encoder_semantic`` + ``acoustic_encoder`` + ``fc`` + ``quantizer``."""

    def __init__(self, cfg: Any) -> None:
        from transformers import HubertModel
        from transformers.models.dac.modeling_dac import DacEncoder

        super().__init__()
        self.semantic_model = HubertModel(cfg.semantic_model_config)
        self.encoder_semantic = SemanticEncoder(cfg)
        self.acoustic_encoder = DacEncoder(cfg.acoustic_model_config)
        self.fc = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.quantizer = _RVQ(cfg)


def build_decoder(cfg: Any) -> Decoder:
    return Decoder(cfg)


def build_encoder(cfg: Any) -> Encoder:
    return Encoder(cfg)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain ``weight`` tensors from weight-normed pairs (``weight_g``/``weight_v`` or
    ``parametrizations.weight.original0/1``), norm over every dim but 0 as torch's weight_norm."""
    out = dict(state)
    for key in list(state):
        for g_suffix, v_suffix in ((".weight_g", ".weight_v"), (".parametrizations.weight.original0",
                                                                  ".parametrizations.weight.original1")):
            if key.endswith(g_suffix):
                base = key[: -len(g_suffix)]
                g, v = out.pop(key), out.pop(base + v_suffix)
                # the norm runs over every dim where g is 1 (dim 0 kept for convs; HuBERT's
                # positional conv keeps dim 2)
                dims = tuple(d for d in range(v.ndim) if g.ndim == v.ndim and g.shape[d] == 1 and v.shape[d] != 1)
                norm = v.float().pow(2).sum(dim=dims, keepdim=True).sqrt()
                out[base + ".weight"] = (g.float() * v.float() / norm).to(v.dtype)
    return out


def conv_out_len(module: nn.Module, length: int) -> int:
    """Output length after every Conv1d inside ``module``, in definition order (upstream's rule)."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            pad = int(m.padding[0]) if isinstance(m.padding, tuple) else 0
            length = (length + 2 * pad - m.dilation[0] * (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
    return length


class Codec:
    """Decoder (always) and encoder (loaded for cloning) on their own devices and dtypes."""

    def __init__(self, cfg: Any, decoder: Decoder, decoder_place: tuple[torch.device, torch.dtype],
                 encoder: Encoder | None = None, encoder_place: tuple[torch.device, torch.dtype] | None = None) -> None:
        self.cfg = cfg
        self.decoder, self.encoder = decoder, encoder
        self.dec_device, self.dec_dtype = decoder_place
        self.enc_device, self.enc_dtype = encoder_place or decoder_place
        self.sample_rate = int(cfg.sample_rate)
        self.hop = int(cfg.hop_length)
        self.frame_rate = int(cfg.frame_rate)

    # ------------------------------------------------------------------ decode
    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (codebooks, frames) -> float32 samples (frames * hop,) on the CPU."""
        m = self.decoder
        codes = codes.to(self.dec_device)
        q = None
        for i, quantizer in enumerate(m.quantizer.levels(codes.shape[0])):
            part = quantizer.decode(codes[i])
            q = part if q is None else q + part
        assert q is not None
        x = m.fc2(q.to(self.dec_dtype))  # (frames, acoustic hidden)
        audio = m.acoustic_decoder(x.t()[None])
        return audio[0, 0].float().cpu()

    def decode_windows(self, codes: torch.Tensor, first: int, window: int, context: int) -> Iterator[torch.Tensor]:
        """Decode ``codes`` in windows (``first`` frames, then ``window``) with ``context`` frames of
        overlap on each side; yields each window's own samples."""
        frames = codes.shape[1]
        start, size = 0, max(1, first)
        while start < frames:
            end = min(frames, start + size)
            a, b = max(0, start - context), min(frames, end + context)
            audio = self.decode(codes[:, a:b])
            yield audio[(start - a) * self.hop:(end - a) * self.hop]
            start, size = end, max(1, window)

    # ------------------------------------------------------------------ encode
    @torch.inference_mode()
    def encode(self, samples: np.ndarray) -> torch.Tensor:
        """Mono float32 at ``sample_rate`` (a multiple of ``hop`` samples) -> codes (codebooks, frames) on the CPU."""
        if self.encoder is None:
            raise RuntimeError("the OmniVoice encoder is not loaded")
        m, cfg = self.encoder, self.cfg
        x = torch.from_numpy(np.ascontiguousarray(samples, np.float32))
        if cfg.sample_rate != cfg.semantic_sample_rate:
            from voxbox.audio.resample import resample

            sem_in = torch.from_numpy(resample(samples, cfg.sample_rate, cfg.semantic_sample_rate).astype(np.float32))
        else:
            sem_in = x
        sem_in = F.pad(sem_in[None].to(self.enc_device), (160, 160))
        states = m.semantic_model(sem_in.to(self.enc_dtype), output_hidden_states=True).hidden_states
        feats = torch.stack(list(states), dim=1).mean(dim=1)
        if cfg.semantic_downsample_factor > 1:
            feats = feats[:, :: cfg.semantic_downsample_factor, :]
        sem = m.encoder_semantic(feats.transpose(1, 2))
        wav = x[None, None].to(self.enc_device, self.enc_dtype)
        if conv_out_len(m.acoustic_encoder, wav.shape[-1]) != sem.shape[2]:
            wav = F.pad(wav, (self.hop // 2, self.hop // 2))
        aco = m.acoustic_encoder(wav)
        emb = m.fc(torch.cat([aco, sem], dim=1)[0].t())  # (frames, hidden)
        codes, residual = [], emb
        for quantizer in m.quantizer.levels(self.num_quantizers):
            idx = quantizer.encode(residual)
            residual = residual - quantizer.decode(idx)
            codes.append(idx)
        return torch.stack(codes).cpu()

    @property
    def num_quantizers(self) -> int:
        return int(self.cfg.num_quantizers)
