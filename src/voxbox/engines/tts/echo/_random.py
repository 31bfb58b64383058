"""Random Echo-TTS weights saved in the upstream directory layout (tests and benchmarks).

The real weights are not reachable here; timing does not depend on weight values, and loading and
inference code is the same for any weights. ``write_random_model(root, "tiny")`` builds the same
upstream classes at toy sizes (seconds on a CPU); ``"real"`` uses upstream's own shapes (the
hard-coded ``load_model_from_hf`` config and ``build_ae()``), as the GPU baseline script does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ._load import AE_CONFIG_FILE, build_dac
from ._upstream import upstream_model

__all__ = ["REAL_DIT", "TINY_AE", "TINY_DIT", "write_random_model"]

REAL_DIT: dict[str, Any] = dict(
    latent_size=80, model_size=2048, num_layers=24, num_heads=16, intermediate_size=5888, norm_eps=1e-5,
    text_vocab_size=256, text_model_size=1280, text_num_layers=14, text_num_heads=10, text_intermediate_size=3328,
    speaker_patch_size=4, speaker_model_size=1280, speaker_num_layers=14, speaker_num_heads=10,
    speaker_intermediate_size=3328, timestep_embed_size=512, adaln_rank=256,
)
TINY_DIT: dict[str, Any] = dict(
    latent_size=80, model_size=64, num_layers=2, num_heads=2, intermediate_size=96, norm_eps=1e-5,
    text_vocab_size=256, text_model_size=32, text_num_layers=1, text_num_heads=2, text_intermediate_size=64,
    speaker_patch_size=4, speaker_model_size=32, speaker_num_layers=1, speaker_num_heads=2,
    speaker_intermediate_size=64, timestep_embed_size=32, adaln_rank=8,
)
#: Same classes, kernel sizes and strides as ``build_ae()`` (so the same hop and receptive field),
#: a few channels wide.
TINY_AE: dict[str, Any] = dict(
    encoder_dim=4,
    encoder_rates=[2, 4, 8, 8],
    latent_dim=64,
    decoder_dim=32,
    decoder_rates=[8, 8, 4, 2],
    encoder_transformer_layers=[0, 0, 0, 1],
    decoder_transformer_layers=[0, 0, 0, 0],
    block_size=4096,
    quantizer=dict(
        n_layer=1, n_head=1, intermediate_size=128, head_dim=64, window_size=128, block_size=4096, n_codebooks=2,
        codebook_size=16, codebook_dim=4, semantic_codebook_size=32, downsample_factor=[2, 2],
    ),
)


def write_random_model(root: str | Path, size: str = "tiny", *, device: str = "cpu", seed: int = 0,
                       hub_layout: bool = False) -> Path:
    """Write ``echo-tts-base/`` and ``fish-s1-dac-min/`` under ``root`` (under ``root/jordand/``
    with ``hub_layout``, the layout upstream's ``EchoTTS(model_path=root)`` reads). Returns root."""
    import safetensors.torch as st

    root = Path(root)
    base = root / "jordand" if hub_layout else root
    (base / "echo-tts-base").mkdir(parents=True, exist_ok=True)
    (base / "fish-s1-dac-min").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    real = size == "real"
    cfg = REAL_DIT if real else TINY_DIT
    with torch.device(device):
        dit = upstream_model().EchoDiT(**cfg)
        if real:  # as the upstream baseline script: weights at std 0.02 keep activations sane
            with torch.no_grad():
                for p in dit.parameters():
                    if p.ndim > 1:
                        p.mul_(0.02 / max(p.std().item(), 1e-6))
    dtype = torch.bfloat16 if real else torch.float32
    st.save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in dit.state_dict().items()},
                 str(base / "echo-tts-base" / "pytorch_model.safetensors"))
    del dit
    ae_cfg = None if real else TINY_AE
    with torch.device(device):
        ae = build_dac(ae_cfg)
    latent_dim = 1024 if real else TINY_AE["latent_dim"]
    st.save_file({k: v.detach().contiguous().cpu() for k, v in ae.state_dict().items()},
                 str(base / "fish-s1-dac-min" / "pytorch_model.safetensors"))
    del ae
    if ae_cfg is not None:
        (base / "fish-s1-dac-min" / AE_CONFIG_FILE).write_text(json.dumps(ae_cfg, indent=1))
    gen = torch.Generator().manual_seed(seed + 1)
    st.save_file(
        {
            "pca_components": torch.randn(cfg["latent_size"], latent_dim, generator=gen) * (0.03 if real else 0.1),
            "pca_mean": torch.zeros(latent_dim), "latent_scale": torch.tensor(1.0),
        },
        str(base / "echo-tts-base" / "pca_state.safetensors"),
    )
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return root
