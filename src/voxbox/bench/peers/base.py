"""What every bench target (a voxbox engine or a peer) looks like to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from voxbox.bench.metrics import clock, device_sync

__all__ = ["NotInstalled", "RunResult", "Target", "has_modules"]


class NotInstalled(Exception):
    """The target's software (or the weights it needs) is not on this machine; the reason says what."""


def has_modules(*names: str) -> list[str]:
    """The names among ``names`` that cannot be imported (the registry's check, shared)."""
    from voxbox.engines.registry import missing_modules

    return missing_modules(*names)


@dataclass
class RunResult:
    """One measured call."""

    total_s: float
    audio_s: float
    ttfa_s: float | None = None  # TTS: time to the first audio chunk
    stages: dict[str, float] = field(default_factory=dict)
    text: str | None = None  # ASR hypothesis
    samples: np.ndarray | None = None  # TTS output (mono float32)
    sample_rate: int | None = None
    #: numbers the engine or peer reports about the call (tokens, frames, ms per frame, chunks ...)
    details: dict[str, float] = field(default_factory=dict)


class Target:
    """A thing the bench measures. Subclasses set ``task`` and implement ``load`` and ``run``.

    ``run`` receives a TTS text or an ASR clip (16 kHz float32 samples) plus per-call options, and
    must read the clock itself (``clock()``, after ``device_sync``) so that only the call counts.
    """

    task: ClassVar[str] = ""
    kind: ClassVar[str] = "peer"  # "voxbox" or "peer"
    #: modules that must be importable; checked before ``load`` to report "not installed"
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    def __init__(self, name: str, model: str | None, settings: dict[str, Any], threads: int | None) -> None:
        self.name = name
        self.model = model
        self.settings = dict(settings)
        self.threads = threads
        self.device = "cpu"
        self.dtype: str | None = None
        self.compile_s: float | None = None
        self.extra: dict[str, Any] = {}

    # -- lifecycle
    def check(self) -> None:
        missing = has_modules(*self.requires)
        if missing:
            hint = f" ({self.install_hint})" if self.install_hint else ""
            raise NotInstalled(f"not installed: missing {', '.join(missing)}{hint}")

    def load(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, item: Any, **options: Any) -> RunResult:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- helpers
    @property
    def voxbox(self) -> dict[str, Any]:
        """What the voxbox target this peer is compared with reported (device, dtype, threads, model_dir ...)."""
        return dict(self.settings.get("voxbox") or {})

    def model_dir(self, engine: str) -> str:
        """The files voxbox loaded: its reported directory, else ``random:SHAPE`` built (cached) or
        the given path. A peer without them is skipped rather than measured on other weights."""
        from voxbox.bench import shapes

        d = self.voxbox.get("model_dir")
        if d:
            return str(d)
        if shapes.is_random(self.model):
            return shapes.build(engine, str(self.model), str(self.voxbox.get("device") or "cpu")).model
        if not self.model:
            raise NotInstalled(f"skipped: {self.name} needs the same local model directory as voxbox")
        return str(self.model)

    def voxbox_device(self, default: str = "cpu") -> str:
        return str(self.voxbox.get("device") or self.settings.get("device") or default)

    def sync(self) -> None:
        device_sync(self.device)

    def now(self) -> float:
        self.sync()
        return clock()
