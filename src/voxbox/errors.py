"""One exception tree for voxbox.

Engines, audio I/O and the runtime raise these; the CLI prints ``str(exc)`` on one line and the
server maps each class to an HTTP status in exactly one place (``voxbox.server.errors``) — never by
matching message strings. Backend exceptions are converted at the boundary with ``raise ... from``.

::

    VoxboxError
    ├── BadInputError                 400  bad parameter or unusable input (``param`` names it)
    │   ├── AudioDecodeError          415  bytes that are not decodable audio (garbage, empty, truncated)
    │   │   ├── UnsupportedFormatError 415 a container/codec voxbox cannot read or write
    │   │   └── ImplausibleAudioError 400  a header that cannot be true (1 Hz rate; hours in a few KB)
    │   ├── AudioTooLongError         413  decoded audio longer than the configured bound
    │   └── UnsupportedOperationError 400  the engine cannot do this (e.g. translate, voice cloning)
    ├── NotFoundError                 404
    │   ├── ModelNotFoundError
    │   └── VoiceNotFoundError
    ├── EngineUnavailableError        400/503 the backend is not installed; ``install_hint`` says how
    ├── ModelLoadError                500  files exist but could not be loaded (incl. SHA-256 mismatch)
    │   └── ChecksumMismatchError
    ├── DeviceError                   500  the device failed, hung or is unusable
    ├── CapacityError                 429  admission queue full (``retry_after`` seconds)
    ├── ServiceUnavailableError       503  cannot take the work now (model memory budget, draining)
    ├── RequestCancelledError         499  the caller went away; work stopped (never sent to a client)
    └── VoxboxTimeoutError            504  work did not finish within its time limit
"""

from __future__ import annotations

__all__ = [
    "AudioDecodeError",
    "AudioTooLongError",
    "BadInputError",
    "CapacityError",
    "ChecksumMismatchError",
    "DeviceError",
    "EngineUnavailableError",
    "ImplausibleAudioError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFoundError",
    "RequestCancelledError",
    "ServiceUnavailableError",
    "UnsupportedFormatError",
    "UnsupportedOperationError",
    "VoiceNotFoundError",
    "VoxboxError",
    "VoxboxTimeoutError",
]


class VoxboxError(Exception):
    """Base of every error voxbox raises on purpose."""

    #: Short machine-readable code (used as the OpenAI error ``code``).
    code: str = "voxbox_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())


class BadInputError(VoxboxError):
    """A parameter or input is invalid. ``param`` names the offending field when known."""

    code = "invalid_request"


class AudioDecodeError(BadInputError):
    """Input bytes are not decodable audio: garbage, empty, truncated or not audio at all."""

    code = "invalid_audio"


class UnsupportedFormatError(AudioDecodeError):
    """A container or codec that voxbox cannot read, or an output format it cannot write."""

    code = "unsupported_format"


class ImplausibleAudioError(AudioDecodeError):
    """Headers or decoded output that cannot be true of a real recording: a sample rate outside
    what voxbox accepts, or more audio than the input's bytes can hold for its codec. Refused
    before (or while) decoding, so a tiny upload cannot expand into gigabytes."""

    code = "implausible_audio"


class AudioTooLongError(BadInputError):
    """Decoded audio exceeds the configured maximum duration."""

    code = "audio_too_long"


class UnsupportedOperationError(BadInputError):
    """The engine cannot do what was asked (translate with an English-only model, cloning...)."""

    code = "unsupported_operation"


class NotFoundError(VoxboxError):
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class VoiceNotFoundError(NotFoundError):
    code = "voice_not_found"


class EngineUnavailableError(VoxboxError):
    """The engine's backend is not installed or cannot run here. ``install_hint`` says what to do."""

    code = "engine_unavailable"

    def __init__(self, message: str, *, install_hint: str | None = None, param: str | None = None) -> None:
        if install_hint and install_hint not in message:
            message = f"{message} (install with: {install_hint})"
        super().__init__(message, param=param)
        self.install_hint = install_hint


class ModelLoadError(VoxboxError):
    """Model files exist but could not be loaded."""

    code = "model_load_failed"


class ChecksumMismatchError(ModelLoadError):
    """A bundled weight file does not match its recorded SHA-256."""

    code = "checksum_mismatch"


class DeviceError(VoxboxError):
    """The requested device failed, hung, or silently fell back."""

    code = "device_error"


class CapacityError(VoxboxError):
    """Too many requests queued for an engine; retry after ``retry_after`` seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(VoxboxError):
    """The work cannot be taken now (e.g. loading the model would pass the memory budget while
    every loaded model is busy); retry later."""

    code = "service_unavailable"


class RequestCancelledError(VoxboxError):
    """The caller cancelled (disconnected); the engine stopped at its next check."""

    code = "cancelled"


class VoxboxTimeoutError(VoxboxError):
    """Work did not finish within its time limit."""

    code = "timeout"
