"""What the torch-whisper engine hands the batcher for one 30-s window, what it gets back, and the
window's place in the batch meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from voxbox.engines.asr.torch_whisper.rules import Rules
from voxbox.engines.asr.whisper.segments import DecodeResult

__all__ = ["WindowRequest", "WindowResult", "WindowSlot"]


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


@dataclass(eq=False)
class WindowSlot:
    """A window in the batch (the scheduler's handle): its request, encoder output and slots."""

    req: WindowRequest
    enc: torch.Tensor
    slots: list[int] = field(default_factory=list)
    steps: int = 0  # tokens chosen so far (the prefill's included)
    done: WindowResult | None = None  # decoded whole (beam, solo fast path): emitted at the next step

    @property
    def start(self) -> int:
        return len(self.req.prompt)

    @property
    def sampled(self) -> bool:
        return self.req.temperature > 0
