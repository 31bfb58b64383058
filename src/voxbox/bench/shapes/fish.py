"""A Fish S2-Pro model directory for ``fish-s2``'s ``weights="random"`` load: ``config.json`` with
the published S2-Pro shapes and a word-level stand-in tokenizer (about one token per English word,
like the real BPE; the slow model's vocabulary size, token layout and every weight shape are
S2-Pro's). ``tiny`` shrinks every transformer and the codec for tests on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_fish_checkpoint", "write_fish_dir"]

#: Words the stand-in tokenizer knows; others map to [UNK] (one token each, as a real word would).
_WORDS = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting each of the one hundred "
    "and twelve steps as his father had taught him. The quick brown fox jumps over the lazy dog near the "
    "riverbank. Hello. This is the reference speech."
)


def write_fish_dir(root: Path, *, tiny: bool = False) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from voxbox.engines.tts.fish_s2.config import S2_PRO_CONFIG, CodecConfig, CodecTransformerConfig

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    words = sorted({w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(_WORDS)})
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    n_sem = 64 if tiny else 4096
    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<|voice|>", "<|speaker:0|>"]
    tok.add_special_tokens(specials + [f"<|semantic:{i}|>" for i in range(n_sem)])
    tok.save(str(root / "tokenizer.json"))
    cfg = json.loads(json.dumps(S2_PRO_CONFIG))
    cfg.update(eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=tok.token_to_id("<|pad|>"),
               audio_pad_token_id=None, semantic_start_token_id=tok.token_to_id("<|semantic:0|>"),
               semantic_end_token_id=tok.token_to_id(f"<|semantic:{n_sem - 1}|>"))
    if tiny:
        cfg["text_config"].update(vocab_size=tok.get_vocab_size() + 8, n_layer=2, dim=64, n_head=4, n_local_heads=2,
                                  head_dim=16, intermediate_size=128)
        cfg["audio_decoder_config"].update(vocab_size=n_sem, n_layer=2, dim=64, text_dim=64, n_head=4,
                                           n_local_heads=2, head_dim=16, intermediate_size=128)
        codec = CodecConfig(encoder_dim=16, encoder_rates=(2, 4), decoder_dim=32, decoder_rates=(4, 2),
                            encoder_transformer_layers=(0, 1), n_codebooks=9, codebook_size=16, codebook_dim=4,
                            semantic_codebook_size=n_sem, downsample_factor=(2,),
                            quantizer_transformer=CodecTransformerConfig(n_layer=1, n_head=2, dim=128,
                                                                         intermediate_size=96, head_dim=32))
        (root / "codec_config.json").write_text(json.dumps(codec.to_dict()), encoding="utf-8")
    (root / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return root


def write_fish_checkpoint(root: Path, *, device: str = "cuda", tiny: bool = False, shards: int = 4) -> Path:
    """``write_fish_dir`` plus random weights saved as a checkpoint in the upstream layout (bf16
    safetensors shards, ``codec.pth``), so a benchmark can time ``weights="checkpoint"``: the load
    a user's real S2-Pro directory takes (reading about 9 GB), not the generation of random weights."""
    import torch

    from voxbox.engines.tts.fish_s2 import loader
    from voxbox.engines.tts.fish_s2.config import load_codec_config, load_dual_ar_config

    root = write_fish_dir(root, tiny=tiny)
    cfg = load_dual_ar_config(root / "config.json")
    dev = torch.device(device)
    slow, fast = loader.random_dual_ar(cfg, device=dev, slow_dtype=torch.bfloat16, fast_dtype=torch.bfloat16)
    loader.save_dual_ar_shards(loader.export_dual_ar_state(slow, fast), root, shards)
    del slow, fast
    codec = loader.random_codec(load_codec_config(root), device=dev, dtype=torch.float32)
    torch.save({k: v.cpu() for k, v in loader.export_codec_state(codec).items()}, root / "codec.pth")
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return root
