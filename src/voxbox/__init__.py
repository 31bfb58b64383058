"""voxbox: local text-to-speech and speech-to-text that runs fast on the hardware you have."""

from voxbox.errors import VoxboxError
from voxbox.types import Audio, AudioChunk, EngineInfo, Segment, StageTimings, TranscriptionInfo, Word

__version__ = "0.1.0"

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
