"""Whisper checkpoints with random weights at the published shapes, in the HF layout torch-whisper
and transformers load, with a real tokenizer (the bundled models'; see :mod:`voxbox.convert.tiny`).

End-of-text is added to the generation config's ``suppress_tokens``: a decoder that can never end
a window decodes exactly ``max_new_tokens`` tokens in torch-whisper and in transformers ``generate``
alike, so the token count is forced on both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["WHISPER_SHAPES", "write_whisper"]

#: HF ``WhisperConfig`` fields of the published checkpoints (the multilingual tokenizer of the
#: bundled base model has 51865 tokens; large-v3's 51866th is one more language token).
WHISPER_SHAPES: dict[str, dict[str, Any]] = {
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                 decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80),
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128),
}


def _suppress_eot(out: Path) -> None:
    path = out / "generation_config.json"
    gen = json.loads(path.read_text(encoding="utf-8"))
    eot = int(gen["eos_token_id"])
    gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | {eot})
    path.write_text(json.dumps(gen, indent=2), encoding="utf-8")


def write_whisper(out: Path, shape: str, *, device: str = "cpu", seed: int = 0) -> Path:
    """``tiny`` (2 x 64, English vocabulary, fp32) or a published shape (multilingual, fp16)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from voxbox.convert.tiny import make_tiny_whisper

    out = Path(out)
    make_tiny_whisper(out, multilingual=shape != "tiny", seed=seed)  # tokenizer, generation, preprocessor
    if shape != "tiny":
        cfg = WhisperConfig.from_pretrained(out)
        for key, value in WHISPER_SHAPES[shape].items():
            setattr(cfg, key, value)
        cfg.max_target_positions = 448
        cfg.init_std = 0.02  # the tiny model's wide init would overflow fp16 through 32 layers
        gen = GenerationConfig.from_pretrained(out)
        heads = cfg.decoder_attention_heads
        gen.alignment_heads = [[cfg.decoder_layers - 1, h] for h in range(0, heads, 4)]
        gen.max_length = 448
        torch.manual_seed(seed)
        with torch.device(device):
            model = WhisperForConditionalGeneration(cfg).to(torch.float16).eval()
        model.generation_config = gen
        model.save_pretrained(str(out), safe_serialization=True)
        del model
        pre_path = out / "preprocessor_config.json"
        pre = json.loads(pre_path.read_text(encoding="utf-8"))
        pre["feature_size"] = cfg.num_mel_bins
        pre_path.write_text(json.dumps(pre, indent=2), encoding="utf-8")
    _suppress_eot(out)
    return out
