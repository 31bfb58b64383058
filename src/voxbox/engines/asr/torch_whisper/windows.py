"""What the torch-whisper engine hands the batcher for one 30-s window, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voxbox.engines.asr.torch_whisper.rules import Rules
from voxbox.engines.asr.whisper.segments import DecodeResult

__all__ = ["WindowRequest", "WindowResult"]


@dataclass
class WindowRequest:
    """One window to decode: its log-mel (``mel``, (n_mels, 3000)) or, for a re-decode at the next
    temperature, its encoder output (``enc``, (1, source, d))."""

    prompt: list[int]
    rules: Rules
    max_new: int
    mel: torch.Tensor | None = None
    enc: torch.Tensor | None = None
    temperature: float = 0.0
    best_of: int = 1
    beam_size: int = 1
    patience: float = 1.0
    length_penalty: float | None = None
    generator: torch.Generator | None = None


@dataclass
class WindowResult:
    result: DecodeResult
    enc: torch.Tensor  # (1, source, d): for word alignment and fallback re-decodes
