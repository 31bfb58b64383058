"""The engine seam: one Protocol per task, plus the small helpers every engine shares.

An engine is a plain object built with load-time settings (model, device, dtype, threads); its
methods take per-call keyword arguments (``None`` means "the model's default"). It knows nothing
about HTTP.

TTS::

    stream = engine.stream("Hello there. How are you?", voice=None, speed=None)
    for chunk in stream:            # AudioChunk, one per sentence (or decoder window)
        ...
    stream.timings.as_dict()        # {"phonemize": ..., "synthesize": ...}

ASR::

    segments, info = engine.transcribe(audio, language=None, word_timestamps=True)
    for seg in segments: ...        # lazy: work happens while iterating
    info.timings.as_dict()          # {"features": ..., "decode": ...}

Both validate their arguments *before* returning the lazy iterator, so a bad request fails
before any streaming starts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from voxbox.errors import BadInputError, UnsupportedOperationError
from voxbox.text.sentences import split_sentences  # re-exported: engines import it from here
from voxbox.types import Audio, AudioChunk, ComponentSpec, EngineInfo, Segment, StageTimings, TranscriptionInfo

__all__ = [
    "ASREngine",
    "validate_asr_call",
    "EncodedVoice",
    "SpeechStream",
    "TTSEngine",
    "split_sentences",
    "validate_speed",
    "validate_text",
]

#: Longest text a single TTS call accepts (OpenAI's limit for /v1/audio/speech is 4096).
MAX_TEXT_CHARS = 4096
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class EncodedVoice:
    """An engine's encoding of a reference clip (speaker latent, reference codes...).

    ``key`` is (engine, model, sha256-of-clip): the voice cache keys on it. ``data`` is whatever
    the engine needs; only the engine that made it interprets it.
    """

    __slots__ = ("key", "data", "transcript", "nbytes")

    def __init__(self, key: tuple[str, str, str], data: Any, transcript: str | None = None, nbytes: int = 0):
        self.key = key
        self.data = data
        self.transcript = transcript
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"EncodedVoice(key={self.key!r})"


class SpeechStream:
    """Iterator of AudioChunks that carries the call's stage timings.

    Engines build one from a generator function; ``close()`` stops generation (the server calls it
    when a client disconnects, so work stops within one chunk).
    """

    def __init__(self, gen_fn: Callable[[StageTimings], Iterator[AudioChunk]], sample_rate: int):
        self.timings = StageTimings()
        self.sample_rate = sample_rate
        self._gen = gen_fn(self.timings)

    def __iter__(self) -> "SpeechStream":
        return self

    def __next__(self) -> AudioChunk:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def collect(self) -> Audio:
        """Run the stream to the end and return the whole audio."""
        parts = [c.samples for c in self]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return Audio(samples, self.sample_rate)


@runtime_checkable
class TTSEngine(Protocol):
    info: EngineInfo

    def stream(
        self,
        text: str,
        voice: str | EncodedVoice | None = None,
        speed: float | None = None,
        **options: Any,
    ) -> SpeechStream:
        """Validate, then return a lazy stream of chunks (sentence by sentence at least)."""
        ...

    def synthesize(self, text: str, voice: str | EncodedVoice | None = None, speed: float | None = None, **options: Any) -> Audio:
        """Whole utterance; built on ``stream``."""
        ...

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> engine encoding. Engines without cloning raise UnsupportedOperationError."""
        ...

    def components(self) -> list[ComponentSpec]:
        """Parts the hardware planner places (may be a single component)."""
        ...

    def close(self) -> None:
        """Free resources (unload)."""
        ...


@runtime_checkable
class ASREngine(Protocol):
    info: EngineInfo

    def transcribe(
        self,
        audio: Audio,
        language: str | None = None,
        prompt: str | None = None,
        word_timestamps: bool = False,
        task: str = "transcribe",
        **options: Any,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Validate, then return (lazy segments, eager info). ``audio`` at any rate (engines resample)."""
        ...

    def components(self) -> list[ComponentSpec]:
        ...

    def close(self) -> None:
        ...


def validate_text(text: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise BadInputError("input text must be a string", param="input")
    text = text.strip()
    if not text:
        raise BadInputError("input text is empty", param="input")
    if len(text) > max_chars:
        raise BadInputError(f"input text is {len(text)} characters; the limit is {max_chars}", param="input")
    if not any(ch.isalnum() for ch in text):
        raise BadInputError("input text has nothing speakable (no letters or digits)", param="input")
    return text


def validate_speed(speed: Any) -> float:
    if speed is None:
        return 1.0
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise BadInputError(f"speed must be a number, got {speed!r}", param="speed") from None
    if not (MIN_SPEED <= value <= MAX_SPEED) or value != value:
        raise BadInputError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {value}", param="speed")
    return value


def join_chunks(chunks: Iterable[AudioChunk], sample_rate: int) -> Audio:
    parts = [c.samples for c in chunks]
    return Audio(np.concatenate(parts) if parts else np.zeros(0, np.float32), sample_rate)


def validate_asr_call(audio: Any, task: Any, *, multilingual: bool, model: str) -> None:
    """Checks every ASR engine makes before returning its lazy segments."""
    if not isinstance(audio, Audio):
        raise BadInputError("audio must be a voxbox Audio", param="file")
    if audio.duration <= 0:
        raise BadInputError("audio is empty", param="file")
    if task not in ("transcribe", "translate"):
        raise BadInputError(f"task must be 'transcribe' or 'translate', got {task!r}", param="task")
    if task == "translate" and not multilingual:
        raise UnsupportedOperationError(
            f"model {model!r} is English-only and cannot translate (use a multilingual model such as 'base')",
            param="task")
