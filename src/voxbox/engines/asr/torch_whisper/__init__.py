"""torch-whisper: Whisper HF checkpoints in PyTorch with a static KV cache and CUDA graphs.

Modules: ``features`` (log-mel on the device), ``tokenizer`` (tokenizer.json; no torch),
``model`` (encoder, decoder with static cache), ``decoding`` (greedy / sampling / beam search with
graph replay), ``engine`` (the ASR engine: long audio, fallback, segments). Importing this package
imports no torch; ``load`` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, **options: Any):
    """Load an HF Whisper checkpoint directory; see :func:`voxbox.engines.asr.torch_whisper.engine.load`."""
    from voxbox.engines.asr.torch_whisper.engine import load as _load

    return _load(model, device=device, dtype=dtype, **options)
