"""voxbox: local text-to-speech and speech-to-text that runs fast on the hardware you have.

Importing ``voxbox`` is cheap (the CLI's ``--help`` imports nothing heavy); the public names below
are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = [
    "Audio",
    "AudioChunk",
    "EngineInfo",
    "Segment",
    "StageTimings",
    "TranscriptionInfo",
    "VoxboxError",
    "Word",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "VoxboxError":
        from voxbox.errors import VoxboxError

        return VoxboxError
    if name in __all__:
        import voxbox.types as types

        return getattr(types, name)
    raise AttributeError(f"module 'voxbox' has no attribute {name!r}")
