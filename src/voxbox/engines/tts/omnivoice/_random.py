"""Random OmniVoice weights saved in the upstream directory layout (tests and GPU benchmarks).

The real weights are not reachable here; timing does not depend on weight values once the number
of steps and frames is fixed, and the loading and inference code is the same for any weights.
``write_random_model(root, "tiny")`` writes a toy model (seconds on a CPU; a 16 kHz codec whose
HuBERT has the real conv strides so the semantic and acoustic frame rates agree, no resampling);
``"real"`` writes the published shapes (Qwen3-0.6B backbone, 8 x 1025 audio vocabulary, the Higgs
audio v2 tokenizer at 24 kHz / 25 Hz with a HuBERT-base semantic model).

The directory is what upstream's ``OmniVoice.from_pretrained`` reads (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``audio_tokenizer/``); the parity tests load it with
upstream's classes as well as voxbox's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ._backbone import Backbone, LMConfig, to_upstream

__all__ = [
    "REAL_CODEC", "REAL_LLM", "SPECIAL_TOKENS", "TINY_CODEC", "TINY_LLM", "write_random_model", "write_tokenizer",
]

SPECIAL_TOKENS = ("<|endoftext|>", "<|denoise|>", "<|lang_start|>", "<|lang_end|>", "<|instruct_start|>",
                  "<|instruct_end|>", "<|text_start|>", "<|text_end|>")
#: Qwen3-0.6B, as OmniVoice's published config.json gives it.
REAL_LLM: dict[str, Any] = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                                num_key_value_heads=8, head_dim=128, vocab_size=151676, rms_norm_eps=1e-6,
                                max_position_embeddings=40960, rope_theta=1_000_000.0)
TINY_LLM: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, vocab_size=1100, rms_norm_eps=1e-6,
                                max_position_embeddings=4096, rope_theta=1_000_000.0)
_HUBERT_CONV = dict(conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2], mask_time_prob=0.0)
#: The Higgs audio v2 tokenizer OmniVoice ships (24 kHz, hop 960 = 25 frames/s, 8 codebooks of 1024).
REAL_CODEC: dict[str, Any] = dict(
    sample_rate=24000, semantic_sample_rate=16000, downsample_factor=320, codebook_size=1024, codebook_dim=64,
    target_bandwidths=[0.5, 1, 1.5, 2],
    acoustic_model_config=dict(encoder_hidden_size=64, decoder_hidden_size=1024, hidden_size=256,
                               downsampling_ratios=[8, 5, 4, 2, 3], upsampling_ratios=[8, 5, 4, 2, 3], hop_length=960),
    semantic_model_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               conv_dim=[512] * 7, **_HUBERT_CONV),
)
#: 16 kHz, hop 320 (50 frames/s), 8 codebooks of 1024 (so the mask id stays 1024), a few channels wide.
TINY_CODEC: dict[str, Any] = dict(
    sample_rate=16000,
    semantic_sample_rate=16000,
    downsample_factor=320,
    codebook_size=1024,
    codebook_dim=8,
    target_bandwidths=[4.0],
    acoustic_model_config=dict(
        encoder_hidden_size=4, decoder_hidden_size=32, hidden_size=16, downsampling_ratios=[8, 5, 4, 2],
        upsampling_ratios=[8, 5, 4, 2], hop_length=320,
    ),
    semantic_model_config=dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, conv_dim=[8] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **_HUBERT_CONV,
    ),
)


def write_tokenizer(root: Path) -> None:
    """A byte-level BPE without merges (one token per UTF-8 byte) plus OmniVoice's special tokens,
    saved as transformers saves a fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(
        str(root)
    )


def _llm_config(size: str) -> dict[str, Any]:
    from transformers import Qwen3Config

    kw = dict(REAL_LLM if size == "real" else TINY_LLM)
    theta = kw.pop("rope_theta")
    cfg = Qwen3Config(**kw, rope_parameters={"rope_type": "default", "rope_theta": theta}, tie_word_embeddings=False)
    return cfg.to_dict()


def _init_backbone(model: Backbone, real: bool) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.02)
        # tiny: logits well spread (std ~2), so greedy choices are not near-ties across implementations
        model.audio_heads.weight.normal_(0.0, 0.02 if real else 2.0 / model.c.hidden ** 0.5)


def _codec_state(cfg: Any) -> dict[str, torch.Tensor]:
    """Random codec weights under upstream's names (one quantizer for encoder and decoder)."""
    from transformers import HubertModel

    from ._codec import build_decoder, build_encoder

    dec, enc = build_decoder(cfg), build_encoder(cfg)
    enc.semantic_model = HubertModel(cfg.semantic_model_config)  # keeps HF's weight-norm parameter names
    state = {**enc.state_dict(), **dec.state_dict()}
    with torch.no_grad():
        for i in range(cfg.num_quantizers):
            p = f"quantizer.quantizers.{i}.codebook."
            embed = torch.randn(cfg.codebook_size, cfg.codebook_dim)
            state.update({p + "embed": embed, p + "embed_avg": embed.clone(), p + "inited": torch.ones(1),
                          p + "cluster_size": torch.zeros(cfg.codebook_size)})
    return {k: v.detach().float().contiguous() for k, v in state.items() if not k.endswith("masked_spec_embed")}


def write_random_model(root: str | Path, size: str = "tiny", *, seed: int = 0, device: str = "cpu") -> Path:
    """Write a random OmniVoice checkpoint in the upstream layout under ``root``; returns root."""
    import safetensors.torch as st
    from transformers.models.higgs_audio_v2_tokenizer.configuration_higgs_audio_v2_tokenizer import (
        HiggsAudioV2TokenizerConfig,
    )

    if size not in ("tiny", "real"):
        raise ValueError(f"size must be 'tiny' or 'real', got {size!r}")
    real = size == "real"
    root = Path(root)
    (root / "audio_tokenizer").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = {
        "architectures": ["OmniVoice"], "model_type": "omnivoice", "audio_vocab_size": 1025, "audio_mask_id": 1024,
        "num_audio_codebook": 8, "audio_codebook_weights": [8, 8, 6, 6, 4, 4, 2, 2], "llm_config": _llm_config(size),
        "dtype": "bfloat16" if real else "float32",
    }
    (root / "config.json").write_text(json.dumps(config, indent=1))
    c = LMConfig.from_json(config)
    with torch.device(device):
        model = Backbone(c)
        _init_backbone(model, real)
    dtype = torch.bfloat16 if real else torch.float32
    st.save_file({k: v.to(dtype).cpu() if v.is_floating_point() else v.cpu() for k, v in to_upstream(c, model).items()},
                 str(root / "model.safetensors"), metadata={"format": "pt"})
    del model
    write_tokenizer(root)
    codec = HiggsAudioV2TokenizerConfig(**(REAL_CODEC if real else TINY_CODEC))
    codec.save_pretrained(str(root / "audio_tokenizer"))
    st.save_file(_codec_state(codec), str(root / "audio_tokenizer" / "model.safetensors"), metadata={"format": "pt"})
    (root / "audio_tokenizer" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "DacFeatureExtractor", "feature_size": 1, "hop_length": codec.hop_length,
                "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
                "sampling_rate": codec.sample_rate,
            },
            indent=1,
        )
    )
    return root
