"""Random VoxCPM2 weights saved in the upstream directory layout (tests and GPU benchmarks).

``write_random_model(root, "tiny")`` builds upstream's modules at toy sizes (seconds on a CPU);
``"real"`` uses the published VoxCPM2 shapes (MiniCPM4 2048-wide x 28 layers, 8-layer residual LM,
12-layer local encoder and DiT, the 16 kHz -> 48 kHz AudioVAE). Timing does not depend on weight
values once the number of generated patches is fixed (``min_len`` = ``max_len``). The directory is
what upstream's ``VoxCPM2Model.from_local`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ._model import build_net, build_vae

__all__ = ["REAL_CONFIG", "TINY_CONFIG", "write_random_model", "write_tokenizer"]


def _lm(
    hidden: int, inter: int, layers: int, heads: int, kv: int, head_dim: int, vocab: int, max_pos: int
) -> dict[str, Any]:
    return {"bos_token_id": 1, "eos_token_id": 2, "hidden_size": hidden, "intermediate_size": inter,
            "max_position_embeddings": max_pos, "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "rms_norm_eps": 1e-05, "rope_theta": 10000, "kv_channels": head_dim,
            "rope_scaling": {"type": "longrope", "long_factor": [1.0] * (head_dim // 2),
                             "short_factor": [1.0 + 0.01 * i for i in range(head_dim // 2)],
                             "original_max_position_embeddings": max_pos},
            "vocab_size": vocab, "use_mup": False, "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4}


def _local(hidden: int, ffn: int, heads: int, layers: int, head_dim: int) -> dict[str, Any]:
    return {"hidden_dim": hidden, "ffn_dim": ffn, "num_heads": heads, "num_layers": layers, "kv_channels": head_dim}


#: The published VoxCPM2 configuration (openbmb/VoxCPM2 config.json, rope factors set to 1).
REAL_CONFIG: dict[str, Any] = {
    "architecture": "voxcpm2", "lm_config": _lm(2048, 6144, 28, 16, 2, 128, 73448, 32768), "patch_size": 4,
    "feat_dim": 64, "scalar_quantization_latent_dim": 512, "scalar_quantization_scale": 9,
    "residual_lm_num_layers": 8, "residual_lm_no_rope": True,
    "encoder_config": _local(1024, 4096, 16, 12, 128),
    "dit_config": {**_local(1024, 4096, 16, 12, 128), "dit_mean_mode": False,
                   "cfm_config": {"sigma_min": 1e-06, "solver": "euler", "t_scheduler": "log-norm",
                                  "inference_cfg_rate": 2.0}},
    "audio_vae_config": {"encoder_dim": 128, "encoder_rates": [2, 5, 8, 8], "latent_dim": 64, "decoder_dim": 2048,
                         "decoder_rates": [8, 6, 5, 2, 2, 2], "depthwise": True, "sample_rate": 16000,
                         "out_sample_rate": 48000, "sr_bin_boundaries": [20000, 30000, 40000]},
    "max_length": 8192, "dtype": "bfloat16",
}
#: Same modules, a few channels wide; the AudioVAE keeps the real rates (16 kHz in, 48 kHz out).
TINY_CONFIG: dict[str, Any] = {
    "architecture": "voxcpm2", "lm_config": _lm(32, 64, 2, 2, 1, 16, 160, 1024), "patch_size": 4, "feat_dim": 8,
    "scalar_quantization_latent_dim": 16, "scalar_quantization_scale": 9, "residual_lm_num_layers": 1,
    "residual_lm_no_rope": True, "encoder_config": _local(32, 64, 2, 1, 16),
    "dit_config": {**_local(32, 64, 2, 1, 16), "dit_mean_mode": False, "cfm_config": {}},
    "audio_vae_config": {"encoder_dim": 4, "encoder_rates": [2, 5, 8, 8], "latent_dim": 8, "decoder_dim": 128,
                         "decoder_rates": [8, 6, 5, 2, 2, 2], "depthwise": True, "sample_rate": 16000,
                         "out_sample_rate": 48000, "sr_bin_boundaries": [20000, 30000, 40000]},
    "max_length": 1024, "dtype": "float32",
}


def write_tokenizer(root: Path, vocab_size: int) -> None:
    """A MiniCPM-style (metaspace BPE) tokenizer: ids 0-2 and 101-104 special, one token per
    character plus a few merged words and multi-character Chinese tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?;:'\"-()") + ["\u2581"]
    chars += list("你好世界我们的是一")
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    specials = {101: "<|audio_start|>", 102: "<|audio_end|>", 103: "<|ref_audio_start|>", 104: "<|ref_audio_end|>"}
    for c in chars:
        while len(vocab) in specials:
            vocab[specials[len(vocab)]] = len(vocab)
        vocab[c] = len(vocab)
    while len(vocab) <= max(specials):
        vocab[specials.get(len(vocab), f"<unused_{len(vocab)}>")] = len(vocab)
    merges = [("\u2581", "t"), ("h", "e"), ("\u2581t", "he"), ("你", "好"), ("世", "界"), ("我", "们")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"tokenizer needs {len(vocab)} ids, the model has {vocab_size}")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(
        str(root))


def write_random_model(root: str | Path, size: str = "tiny", *, seed: int = 0, device: str = "cpu") -> Path:
    """Write a random VoxCPM2 checkpoint in the upstream layout under ``root``; returns root."""
    import safetensors.torch as st

    if size not in ("tiny", "real"):
        raise ValueError(f"size must be 'tiny' or 'real', got {size!r}")
    real = size == "real"
    cfg = json.loads(json.dumps(REAL_CONFIG if real else TINY_CONFIG))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg, indent=1))
    torch.manual_seed(seed)
    with torch.device(device):
        net = build_net(cfg)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.ndim == 2 and not name.endswith("stop_head.weight"):
                    p.normal_(0.0, 0.02)
            net.stop_head.weight.normal_(0.0, 0.02 if real else 0.5)
    dtype = torch.bfloat16 if real else torch.float32
    st.save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in net.state_dict().items()},
                 str(root / "model.safetensors"), metadata={"format": "pt"})
    del net
    with torch.device(device):
        vae = build_vae(cfg)
    st.save_file({k: v.detach().float().contiguous().cpu() for k, v in vae.state_dict().items()},
                 str(root / "audiovae.safetensors"), metadata={"format": "pt"})
    write_tokenizer(root, int(cfg["lm_config"]["vocab_size"]))
    return root
