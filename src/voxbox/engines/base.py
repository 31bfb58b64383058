"""The engine seam: one Protocol per task, plus the small helpers every engine shares.

An engine is a plain object built with load-time settings (model, device, dtype, threads) by its
spec's factory (:mod:`voxbox.engines.spec`); its methods take the common arguments plus the engine's
typed Options dataclass (``None`` fields mean "the model's default") and a
:class:`~voxbox.types.CancelToken` checked at least once per chunk or window. It knows nothing
about HTTP: errors name the engine's own parameters (``text``, ``audio``, ``voice``...) and the
fronts map them to their protocol's field names.

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

import contextlib
import logging
import re
from typing import Any, Callable, Iterator, Protocol, TypeVar, Union, runtime_checkable

import numpy as np

from voxbox.errors import BadInputError, ModelLoadError, UnsupportedOperationError, VoxboxError
from voxbox.text.sentences import split_sentences  # re-exported: engines import it from here
from voxbox.types import (
    Audio,
    AudioChunk,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
)

__all__ = [
    "ASREngine",
    "Batchable",
    "Engine",
    "VoiceArg",
    "cancellable",
    "validate_asr_call",
    "EncodedVoice",
    "SpeechStream",
    "TTSEngine",
    "model_files",
    "release_freed_memory",
    "sentence_errors",
    "split_sentences",
    "validate_speed",
    "validate_text",
]

log = logging.getLogger("voxbox.engines")

#: Longest text a single TTS call accepts (OpenAI's limit for /v1/audio/speech is 4096).
MAX_TEXT_CHARS = 4096
#: Characters no TTS engine is given: C0/C1 control characters other than the line-breaking and
#: spacing ones (tab, newline, vertical tab, form feed, carriage return, next line U+0085) and
#: unpaired UTF-16 surrogates (not valid Unicode; they cannot even be encoded as UTF-8).
_FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")
MIN_SPEED, MAX_SPEED = 0.25, 4.0
T = TypeVar("T")


class Batchable:
    """Mixed into engines the runtime can batch across requests (spec ``capabilities.batchable``).
    The runtime builds ``engine.batcher(config)``, runs a scheduler on it and hands that over through
    :meth:`use_scheduler`; the engine routes its calls through ``self._scheduler`` while it is set."""

    _scheduler: Any = None
    info: EngineInfo

    def use_scheduler(self, scheduler: Any) -> None:
        """Route calls started from now on through ``scheduler`` (None: one call at a time again)."""
        self._scheduler = scheduler
        if scheduler is not None:
            self.info.extra["batch_slots"] = int(scheduler.max_batch)
        else:
            self.info.extra.pop("batch_slots", None)


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


VoiceArg = Union[str, EncodedVoice, Audio, None]


class SpeechStream:
    """Iterator of AudioChunks that carries the call's stage timings and details.

    Engines build one from a generator function ``gen_fn(timings)``. ``cancel`` is checked before
    every chunk (engines also check it inside long chunks); ``close()`` stops generation. ``details``
    is what the engine reports about the call beyond stage times (e.g. ``first_audio_s``,
    ``frames``, ``finish_reason``); engines fill it while generating.
    """

    def __init__(self, gen_fn: Callable[[StageTimings], Iterator[AudioChunk]], sample_rate: int, *,
                 cancel: CancelToken | None = None, details: dict[str, Any] | None = None) -> None:
        self.timings = StageTimings()
        self.sample_rate = sample_rate
        self.cancel = cancel if cancel is not None else CancelToken()
        self.details: dict[str, Any] = details if details is not None else {}
        self._gen = gen_fn(self.timings)

    def __iter__(self) -> "SpeechStream":
        return self

    def __next__(self) -> AudioChunk:
        self.cancel.check()
        return next(self._gen)

    def close(self) -> None:
        close = getattr(self._gen, "close", None)  # generators have it; a plain iterator holds nothing
        if close is not None:
            close()

    def collect(self) -> Audio:
        """Run the stream to the end and return the whole audio."""
        parts = [c.samples for c in self]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return Audio(samples, self.sample_rate)


def cancellable(segments: Iterator[T], cancel: CancelToken | None) -> Iterator[T]:
    """``segments`` with ``cancel`` checked before each item (ASR engines wrap their lazy results)."""
    if cancel is None:
        yield from segments
        return
    it = iter(segments)
    while True:
        cancel.check()
        try:
            item = next(it)
        except StopIteration:
            return
        yield item


@runtime_checkable
class TTSEngine(Protocol):
    info: EngineInfo

    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        """Validate, then return a lazy stream of chunks (sentence by sentence at least).

        ``options`` is the engine's Options dataclass (or a mapping of its fields); ``kwargs`` are
        more of its fields, for Python callers."""
        ...

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        """Whole utterance; built on ``stream``."""
        ...

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> engine encoding. Engines without cloning raise UnsupportedOperationError."""
        ...

    def components(self) -> list[ComponentSpec]:
        """Parts the hardware planner places, at the loaded model's real sizes."""
        ...

    def close(self) -> None:
        """Free resources (unload)."""
        ...


@runtime_checkable
class ASREngine(Protocol):
    info: EngineInfo

    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Validate, then return (lazy segments, eager info). ``audio`` at any rate (engines resample)."""
        ...

    def components(self) -> list[ComponentSpec]:
        ...

    def close(self) -> None:
        ...


Engine = Union[TTSEngine, ASREngine]


def validate_text(text: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The checks every TTS engine makes on its input text; returns it stripped.

    Control characters (NUL, escape, DEL, C1...) and unpaired surrogates are refused with the
    offending code point and position, for every engine alike: they are never speech, and some
    backends crash on them (espeak-ng on NUL, UTF-8 encoders on surrogates).
    """
    if not isinstance(text, str):
        raise BadInputError("input text must be a string", param="text")
    text = text.strip()
    if not text:
        raise BadInputError("input text is empty", param="text")
    if len(text) > max_chars:
        raise BadInputError(f"input text is {len(text)} characters; the limit is {max_chars}", param="text")
    bad = _FORBIDDEN_CHARS.search(text)
    if bad is not None:
        code = ord(bad.group())
        if 0xD800 <= code <= 0xDFFF:
            why = "an unpaired surrogate (not valid Unicode text)"
        else:
            why = "a control character (only tab, newline and carriage return are allowed)"
        raise BadInputError(f"input text has U+{code:04X} at position {bad.start()}, {why}; remove it", param="text")
    if not any(ch.isalnum() for ch in text):
        raise BadInputError("input text has nothing speakable (no letters or digits)", param="text")
    return text


@contextlib.contextmanager
def sentence_errors(engine: str, sentence: str, stage: str) -> Iterator[None]:
    """Convert what a backend raises on one sentence into ``BadInputError`` (``param="text"``).

    Wrap every call into a TTS backend's text front-end or synthesis with it: an upstream bug
    triggered by the text (hibari's G2P on a 37-digit number: ``IndexError``) becomes a clear 4xx
    naming the sentence, raised ``from`` the original; voxbox errors pass through unchanged. The
    exception type is logged, not put in the message (backend messages can hold paths).
    """
    try:
        yield
    except VoxboxError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        snippet = sentence if len(sentence) <= 60 else sentence[:57] + "..."
        log.warning("%s %s failed on %r: %s: %s", engine, stage, snippet, type(exc).__name__, exc)
        raise BadInputError(f"{engine} could not {stage} the sentence {snippet!r}; rephrase it (for example, write "
                            "very long numbers or unusual symbols as words)", param="text") from exc


_LIBC: Any = None


def release_freed_memory() -> None:
    """Give memory the process has freed back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    Engines whose backends allocate large, differently sized buffers per call (ONNX Runtime
    without its arena, one call per sentence) call this after each call: glibc otherwise keeps
    the freed pages of a fragmented heap, and a server's RSS ratchets up with every new sentence
    length. Cost: well under a millisecond per call.
    """
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            if lib is not None and hasattr(lib, "malloc_trim"):
                _LIBC = lib
        except OSError:
            pass
    if _LIBC:
        _LIBC.malloc_trim(0)


@contextlib.contextmanager
def model_files(what: str) -> Iterator[None]:
    """Convert what a backend raises while reading model files into ``ModelLoadError``.

    Wrap the calls that parse weight/config/tokenizer files (safetensors, torch.load, ONNX
    Runtime sessions, tokenizers, JSON): a corrupt or foreign file then reads "could not load
    <what>: <reason>" instead of escaping as a ``SafetensorError`` or a bare ``Exception``.
    voxbox errors pass through unchanged.
    """
    try:
        yield
    except VoxboxError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelLoadError(f"could not load {what}: {reason}") from exc


def validate_speed(speed: Any) -> float:
    if speed is None:
        return 1.0
    try:
        value = float(speed)
    except (TypeError, ValueError, OverflowError):
        shown = repr(speed) if len(repr(speed)) <= 40 else repr(speed)[:37] + "..."
        raise BadInputError(f"speed must be a number between {MIN_SPEED} and {MAX_SPEED}, got {shown}",
                            param="speed") from None
    if not (MIN_SPEED <= value <= MAX_SPEED) or value != value:
        raise BadInputError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {value}", param="speed")
    return value


def validate_asr_call(audio: Any, task: Any, *, multilingual: bool, model: str) -> None:
    """Checks every ASR engine makes before returning its lazy segments."""
    if not isinstance(audio, Audio):
        raise BadInputError("audio must be a voxbox Audio", param="audio")
    if audio.duration <= 0:
        raise BadInputError("audio is empty", param="audio")
    if task not in ("transcribe", "translate"):
        raise BadInputError(f"task must be 'transcribe' or 'translate', got {task!r}", param="task")
    if task == "translate" and not multilingual:
        raise UnsupportedOperationError(
            f"model {model!r} is English-only and cannot translate (use a multilingual model such as 'base')",
            param="task")
