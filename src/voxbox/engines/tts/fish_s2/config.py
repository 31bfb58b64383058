"""Shapes of Fish Audio S2-Pro, read from the checkpoint's ``config.json`` (and the codec's defaults).

The dual-AR checkpoint's ``config.json`` (``model_type: fish_qwen3_omni``) nests a ``text_config``
(the "slow" Qwen3-style transformer, one step per audio frame) and an ``audio_decoder_config``
(the "fast" transformer that emits a frame's residual codebooks). Missing fields take upstream's
defaults (``FishQwen3Config``): ``n_local_heads=-1`` means ``n_head``; ``head_dim`` defaults to
``dim // n_head``; ``intermediate_size`` to the multiple of 256 above ``8 * dim / 3``.

The codec (``codec.pth``, a modified DAC at 44.1 kHz) has no config file upstream: its shapes are
fixed in fish-speech's ``modded_dac_vq.yaml``; :data:`S2_CODEC` holds them. A directory may carry a
``codec_config.json`` (voxbox's own, optional) whose keys override those defaults, which is how the
tests build a tiny codec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "CodecConfig",
    "CodecTransformerConfig",
    "DualARConfig",
    "S2_CODEC",
    "S2_PRO_CONFIG",
    "TransformerConfig",
    "load_codec_config",
    "load_dual_ar_config",
]


def _multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


@dataclass(frozen=True)
class TransformerConfig:
    """One Qwen3-style decoder stack (the slow model, or the fast one with ``num_codebooks``)."""

    vocab_size: int
    dim: int
    n_layer: int
    n_head: int
    n_local_heads: int
    head_dim: int
    intermediate_size: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    attention_qkv_bias: bool = False
    attention_o_bias: bool = False
    attention_qk_norm: bool = False
    tie_word_embeddings: bool = True
    # fast (audio decoder) only
    text_dim: int | None = None
    num_codebooks: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, fast: bool = False) -> "TransformerConfig":
        dim = int(d.get("dim", 4096))
        n_head = int(d.get("n_head", 32))
        n_local = int(d.get("n_local_heads", -1))
        inter = d.get("intermediate_size")
        if inter is None:
            inter = _multiple(int(2 * (4 * dim) / 3), 256)
        head_dim = d.get("head_dim")
        num_cb = int(d.get("num_codebooks", 4)) if fast else None
        return cls(
            vocab_size=int(d.get("vocab_size", 32000)),
            dim=dim,
            n_layer=int(d.get("n_layer", 32)),
            n_head=n_head,
            n_local_heads=n_head if n_local == -1 else n_local,
            head_dim=int(head_dim) if head_dim is not None else dim // n_head,
            intermediate_size=int(inter),
            rope_base=float(d.get("rope_base", 10000.0)),
            norm_eps=float(d.get("norm_eps", 1e-5)),
            # upstream pins the fast decoder's length to num_codebooks + 1
            max_seq_len=(num_cb + 1) if num_cb is not None else int(d.get("max_seq_len", 2048)),
            attention_qkv_bias=bool(d.get("attention_qkv_bias", False)),
            attention_o_bias=bool(d.get("attention_o_bias", False)),
            attention_qk_norm=bool(d.get("attention_qk_norm", False)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
            text_dim=int(d.get("text_dim", 1024)) if fast else None,
            num_codebooks=num_cb,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.num_codebooks is None:
            d.pop("text_dim")
            d.pop("num_codebooks")
        return d


@dataclass(frozen=True)
class DualARConfig:
    text: TransformerConfig
    fast: TransformerConfig
    eos_token_id: int  # <|im_end|>
    pad_token_id: int | None
    semantic_start_token_id: int  # <|semantic:0|>
    semantic_end_token_id: int  # <|semantic:{codebook_size-1}|>
    audio_pad_token_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_codebooks(self) -> int:
        return int(self.fast.num_codebooks or 0)

    @property
    def codebook_size(self) -> int:
        return self.fast.vocab_size

    def to_json(self) -> dict[str, Any]:
        """The upstream ``config.json`` layout."""
        text = self.text.to_dict()
        text["model_type"] = "fish_qwen3"
        fast = self.fast.to_dict()
        fast["model_type"] = "fish_qwen3_audio_decoder"
        return {
            "architectures": ["FishQwen3OmniForCausalLM"],
            "model_type": "fish_qwen3_omni",
            "dtype": "bfloat16",
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "audio_pad_token_id": self.audio_pad_token_id,
            "semantic_start_token_id": self.semantic_start_token_id,
            "semantic_end_token_id": self.semantic_end_token_id,
            "text_config": text,
            "audio_decoder_config": fast,
        }


def load_dual_ar_config(path: str | Path) -> DualARConfig:
    """Parse the dual-AR ``config.json`` (a file, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    raw = json.loads(p.read_text(encoding="utf-8"))
    if raw.get("model_type") not in (None, "fish_qwen3_omni"):
        raise ValueError(f"{p}: model_type is {raw.get('model_type')!r}, expected 'fish_qwen3_omni'")
    if "text_config" not in raw or "audio_decoder_config" not in raw:
        raise ValueError(f"{p}: needs text_config and audio_decoder_config (a Fish S2 dual-AR config)")
    text = TransformerConfig.from_dict(raw["text_config"])
    fast = TransformerConfig.from_dict(raw["audio_decoder_config"], fast=True)
    if fast.text_dim != text.dim:
        raise ValueError(f"{p}: audio_decoder_config.text_dim ({fast.text_dim}) != text_config.dim ({text.dim})")
    for key in ("eos_token_id", "semantic_start_token_id", "semantic_end_token_id"):
        if raw.get(key) is None:
            raise ValueError(f"{p}: missing {key}")
    cfg = DualARConfig(
        text=text,
        fast=fast,
        eos_token_id=int(raw["eos_token_id"]),
        pad_token_id=raw.get("pad_token_id"),
        semantic_start_token_id=int(raw["semantic_start_token_id"]),
        semantic_end_token_id=int(raw["semantic_end_token_id"]),
        audio_pad_token_id=raw.get("audio_pad_token_id"),
        raw=raw,
    )
    n_sem = cfg.semantic_end_token_id - cfg.semantic_start_token_id + 1
    if n_sem != fast.vocab_size:
        raise ValueError(f"{p}: {n_sem} semantic tokens but the fast decoder's vocab_size is {fast.vocab_size}")
    if cfg.semantic_end_token_id >= text.vocab_size or cfg.eos_token_id >= text.vocab_size:
        raise ValueError(f"{p}: semantic/eos token ids exceed text vocab_size {text.vocab_size}")
    return cfg


#: Fish Audio S2-Pro (fishaudio/s2-pro config.json, as published).
S2_PRO_CONFIG: dict[str, Any] = {
    "model_type": "fish_qwen3_omni",
    "eos_token_id": 151645,
    "pad_token_id": 151669,
    "audio_pad_token_id": 151677,
    "semantic_start_token_id": 151678,
    "semantic_end_token_id": 155773,
    "text_config": {
        "model_type": "fish_qwen3", "vocab_size": 155776, "n_layer": 36, "n_head": 32, "n_local_heads": 8,
        "head_dim": 128, "dim": 2560, "intermediate_size": 9728, "rope_base": 1000000, "norm_eps": 1e-6,
        "max_seq_len": 32768, "tie_word_embeddings": True, "attention_qk_norm": True,
    },
    "audio_decoder_config": {
        "model_type": "fish_qwen3_audio_decoder", "vocab_size": 4096, "n_layer": 4, "n_head": 32,
        "n_local_heads": 8, "head_dim": 128, "dim": 2560, "text_dim": 2560, "intermediate_size": 9728,
        "rope_base": 1000000, "norm_eps": 1e-6, "num_codebooks": 10, "tie_word_embeddings": False,
        "attention_qk_norm": False,
    },
}


@dataclass(frozen=True)
class CodecTransformerConfig:
    """The codec's windowed causal transformers (quantizer pre/post modules, encoder block)."""

    n_layer: int = 8
    n_head: int = 16
    dim: int = 1024
    intermediate_size: int = 3072
    head_dim: int = 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    window_size: int | None = 128


@dataclass(frozen=True)
class CodecConfig:
    """The modified DAC of fish-speech (``modded_dac_vq.yaml``): 44.1 kHz, 2048 samples per frame."""

    sample_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    encoder_transformer_layers: tuple[int, ...] = (0, 0, 0, 4)
    encoder_transformer_window: int = 512  # upstream: getattr(partial, "window_size", 512)
    encoder_transformer_head_dim: int = 64
    latent_dim: int | None = None  # default encoder_dim * 2 ** len(encoder_rates)
    n_codebooks: int = 9  # residual codebooks (plus one semantic)
    codebook_size: int = 1024
    codebook_dim: int = 8
    semantic_codebook_size: int = 4096
    downsample_factor: tuple[int, ...] = (2, 2)
    quantizer_transformer: CodecTransformerConfig = field(default_factory=CodecTransformerConfig)

    @property
    def latent(self) -> int:
        return self.latent_dim or self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def hop_length(self) -> int:
        n = 1
        for r in self.encoder_rates:
            n *= r
        return n

    @property
    def frame_length(self) -> int:
        """Audio samples per code frame (2048 for S2-Pro: 21.5 frames/s at 44.1 kHz)."""
        n = self.hop_length
        for f in self.downsample_factor:
            n *= f
        return n

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_length

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodecConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown codec config keys: {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k == "quantizer_transformer":
                kw[k] = replace(CodecTransformerConfig(), **v)
            elif isinstance(v, list):
                kw[k] = tuple(v)
            else:
                kw[k] = v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


S2_CODEC = CodecConfig()


def load_codec_config(model_dir: str | Path) -> CodecConfig:
    p = Path(model_dir) / "codec_config.json"
    if not p.exists():
        return S2_CODEC
    return CodecConfig.from_dict(json.loads(p.read_text(encoding="utf-8")))
