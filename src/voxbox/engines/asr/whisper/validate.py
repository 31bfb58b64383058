"""The argument checks every Whisper engine makes before it returns its lazy segments, and the
checks of the decoding options they share (so the same bad value gives the same error whichever
engine serves the call). Light: no numpy, torch or backend import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from voxbox.engines.asr.whisper.tokens import language_code
from voxbox.engines.base import validate_asr_call
from voxbox.errors import BadInputError, UnsupportedOperationError

__all__ = ["check_call", "check_decoding", "check_language"]


def check_language(language: Any, languages: Sequence[str], model: str) -> str | None:
    """The Whisper code for ``language`` (None: detect) if this model can transcribe it.

    Unknown codes are bad input; a known language the model lacks (any but English on an ``.en``
    model) is an unsupported operation."""
    code = language_code(language)
    if code is None or code in languages:
        return code
    if tuple(languages) == ("en",):
        raise UnsupportedOperationError(
            f"model {model!r} is English-only; it cannot transcribe language {code!r} "
            "(use a multilingual model such as 'base')", param="language")
    raise UnsupportedOperationError(f"model {model!r} has no language {code!r}", param="language")


def check_call(audio: Any, language: Any, prompt: Any, word_timestamps: Any, task: Any, *, engine: str,
               model: str, languages: Sequence[str], word_timestamps_supported: bool) -> str | None:
    """Checks for ``transcribe(audio, language, prompt, word_timestamps, task)``; returns the
    language code (None: detect). ``languages``: the model's; more than one means multilingual."""
    validate_asr_call(audio, task, multilingual=len(languages) > 1, model=model)
    code = check_language(language, languages, model)
    if prompt is not None and not isinstance(prompt, str):
        raise BadInputError("prompt must be a string", param="prompt")
    if not isinstance(word_timestamps, bool):
        raise BadInputError("word_timestamps must be true or false", param="word_timestamps")
    if word_timestamps and not word_timestamps_supported:
        raise UnsupportedOperationError(f"{engine} has no word timestamps for this model", param="word_timestamps")
    return code


_AT_LEAST_ONE = ("beam_size", "best_of", "batch_size", "max_new_tokens")
_POSITIVE = ("patience", "compression_ratio_threshold")
_PROBABILITIES = ("no_speech_threshold",)


def check_decoding(options: Any) -> None:
    """Range checks for the decoding options a Whisper engine's ``Options`` has (``None`` = the
    engine's default, always fine): counts >= 1, temperatures in [0, 1], patience and the
    compression-ratio threshold > 0, the no-speech threshold a probability, all finite."""
    for name in _AT_LEAST_ONE:
        v = getattr(options, name, None)
        if v is not None and v < 1:
            raise BadInputError(f"{name} must be >= 1, got {v}", param=name)
    for name in (*_POSITIVE, *_PROBABILITIES, "log_prob_threshold", "length_penalty"):
        v = getattr(options, name, None)
        if v is not None and not math.isfinite(v):
            raise BadInputError(f"{name} must be a finite number, got {v}", param=name)
    for name in _POSITIVE:
        v = getattr(options, name, None)
        if v is not None and v <= 0:
            raise BadInputError(f"{name} must be > 0, got {v}", param=name)
    for name in _PROBABILITIES:
        v = getattr(options, name, None)
        if v is not None and not 0.0 <= v <= 1.0:
            raise BadInputError(f"{name} must be between 0 and 1, got {v}", param=name)
    temps = getattr(options, "temperature", None)
    if temps is not None:
        if not temps:
            raise BadInputError("temperature list is empty", param="temperature")
        if any(not 0.0 <= t <= 1.0 for t in temps):
            raise BadInputError("temperature must be between 0 and 1", param="temperature")
