"""Random Whisper weights large enough that the audio steers the decoder.

At the default init a random Whisper decodes one token over and over whatever it hears, so any
decoder, right or wrong, reproduces it; the parity, fast-step, kernel and GPU tests use these
weights (and check the tokens are not such a repeat) so that a wrong step shows up."""

from __future__ import annotations

from typing import Any


def steer_weights(model: Any, *, norms: bool = False) -> None:
    """In place, under ``torch.no_grad``: matrices ~ N(0, 1/fan_in) (cross-attention 3x), other
    vectors ~ N(0, 0.05), token embeddings 4x; layer norms kept (``norms``: jittered around 1/0)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                if norms and p.ndim == 1:
                    p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
                continue
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5 * (3.0 if "encoder_attn" in name else 1.0))
            else:
                p.normal_(0.0, 0.05)
            if "embed_tokens" in name:
                p.mul_(4.0)
