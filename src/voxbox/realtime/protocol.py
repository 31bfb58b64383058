"""OpenAI Realtime transcription-session events: parsing client events, building server events.

Two dialects reach the same session state:

* GA (``openai`` ``client.realtime``): ``session.update`` with ``session.type == "transcription"``
  and ``session.audio.input.{format, transcription, turn_detection}``; answered ``session.updated``.
* Beta (``client.beta.realtime``, browsers written against it): ``transcription_session.update``
  with ``session.{input_audio_format, input_audio_transcription, turn_detection}``; answered
  ``transcription_session.updated``.

Audio formats: ``pcm16`` / ``audio/pcm`` (16-bit little-endian mono at 24 kHz), ``g711_ulaw`` /
``audio/pcmu`` and ``g711_alaw`` / ``audio/pcma`` (8 kHz). Everything is converted to 16 kHz float
for the VAD and the ASR engine. Errors are ``error`` events with OpenAI's shape; they never close
the session.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from voxbox.errors import BadInputError

__all__ = ["FORMAT_RATES", "ProtocolError", "SessionConfig", "TurnDetection", "apply_update", "decode_audio",
           "error_event", "new_id", "session_object"]

#: Wire format -> sample rate.
FORMAT_RATES = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}
_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_GA_NAMES = {v: k for k, v in _GA_FORMATS.items()}
_MAX_PROMPT = 4096


class ProtocolError(BadInputError):
    """A client event the session cannot apply; sent back as an ``error`` event (code, param)."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message, param=param)
        self.code = code
        self.event_id = event_id
        self.kind = kind


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass(frozen=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    input_format: str = "pcm16"
    #: None = manual commits (``input_audio_buffer.commit``).
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    include_logprobs: bool = False

    @property
    def rate(self) -> int:
        return FORMAT_RATES[self.input_format]


# -- parsing -----------------------------------------------------------------------------------------

def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{param} must be an object", code="invalid_type", param=param)
    return value


def _turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    td = _obj(value, param)
    kind = td.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError(f"{param}.type must be server_vad (or null for manual commits)", param=f"{param}.type")
    base = current or TurnDetection()
    threshold = td.get("threshold", base.threshold)
    prefix = td.get("prefix_padding_ms", base.prefix_padding_ms)
    silence = td.get("silence_duration_ms", base.silence_duration_ms)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 < threshold < 1.0:
        raise ProtocolError(f"{param}.threshold must be a number between 0 and 1", param=f"{param}.threshold")
    for name, v in (("prefix_padding_ms", prefix), ("silence_duration_ms", silence)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10_000:
            raise ProtocolError(f"{param}.{name} must be an integer from 0 to 10000", param=f"{param}.{name}")
    return TurnDetection(float(threshold), int(prefix), max(int(silence), 32))


def _transcription(value: Any, cfg: SessionConfig, param: str) -> SessionConfig:
    if value is None:
        return cfg
    tr = _obj(value, param)
    model = tr.get("model", cfg.model)
    language = tr.get("language", cfg.language)
    prompt = tr.get("prompt", cfg.prompt)
    if not isinstance(model, str) or not model or len(model) > 256:
        raise ProtocolError(f"{param}.model must be a model name", param=f"{param}.model")
    if language is not None and (not isinstance(language, str) or len(language) > 16):
        raise ProtocolError(f"{param}.language must be a language code such as 'en'", param=f"{param}.language")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > _MAX_PROMPT):
        raise ProtocolError(f"{param}.prompt must be text of at most {_MAX_PROMPT} characters", param=f"{param}.prompt")
    return replace(cfg, model=model, language=language or None, prompt=prompt or None)


def _format(value: Any, param: str) -> str:
    if isinstance(value, dict):  # GA: {"type": "audio/pcm", "rate": 24000}
        kind = value.get("type", "audio/pcm")
        rate = value.get("rate", 24000)
        if kind not in _GA_FORMATS:
            raise ProtocolError(f"{param}.type must be one of {', '.join(_GA_FORMATS)}", param=f"{param}.type")
        if kind == "audio/pcm" and rate != 24000:
            raise ProtocolError("only 24000 Hz PCM is supported", param=f"{param}.rate")
        return _GA_FORMATS[kind]
    if value not in FORMAT_RATES:
        raise ProtocolError(f"{param} must be one of {', '.join(FORMAT_RATES)}", param=param)
    return str(value)


def apply_update(cfg: SessionConfig, event: dict[str, Any]) -> SessionConfig:
    """The session after a ``session.update`` (GA) or ``transcription_session.update`` (beta)."""
    session = _obj(event.get("session"), "session")
    include = session.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise ProtocolError("session.include must be a list", param="session.include")
        cfg = replace(cfg, include_logprobs="item.input_audio_transcription.logprobs" in include)
    if event.get("type") == "session.update":
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise ProtocolError("this server offers transcription sessions only: use session.type "
                                "'transcription' (connect with ?intent=transcription)", param="session.type")
        audio = session.get("audio")
        if audio is None:
            return cfg
        inp = _obj(_obj(audio, "session.audio").get("input", {}), "session.audio.input")
        p = "session.audio.input"
        if "format" in inp:
            cfg = replace(cfg, input_format=_format(inp["format"], f"{p}.format"))
        cfg = _transcription(inp.get("transcription"), cfg, f"{p}.transcription")
        if "turn_detection" in inp:
            cfg = replace(cfg, turn_detection=_turn_detection(inp["turn_detection"], cfg.turn_detection,
                                                              f"{p}.turn_detection"))
        return cfg
    if "input_audio_format" in session:
        cfg = replace(cfg, input_format=_format(session["input_audio_format"], "session.input_audio_format"))
    cfg = _transcription(session.get("input_audio_transcription"), cfg, "session.input_audio_transcription")
    if "turn_detection" in session:
        cfg = replace(cfg, turn_detection=_turn_detection(session["turn_detection"], cfg.turn_detection,
                                                          "session.turn_detection"))
    return cfg


# -- audio ---------------------------------------------------------------------------------------------

def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign != 0, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = a & 0x80, (a >> 4) & 0x07, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(sign != 0, magnitude, -magnitude) / 32768.0).astype(np.float32)


_TABLES = {"g711_ulaw": _ulaw_table(), "g711_alaw": _alaw_table()}


def decode_audio(b64: Any, fmt: str) -> np.ndarray:
    """``input_audio_buffer.append``'s ``audio`` (base64) -> float32 samples at the format's rate."""
    if not isinstance(b64, str):
        raise ProtocolError("audio must be a base64 string", code="invalid_type", param="audio")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("audio is not valid base64", param="audio") from None
    if fmt == "pcm16":
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return _TABLES[fmt][np.frombuffer(raw, dtype=np.uint8)]


# -- server events ---------------------------------------------------------------------------------------

def session_object(cfg: SessionConfig, session_id: str, *, beta: bool) -> dict[str, Any]:
    """The effective session, in the dialect the client speaks."""
    td = None if cfg.turn_detection is None else {
        "type": "server_vad", "threshold": cfg.turn_detection.threshold,
        "prefix_padding_ms": cfg.turn_detection.prefix_padding_ms,
        "silence_duration_ms": cfg.turn_detection.silence_duration_ms}
    transcription = {"model": cfg.model, "language": cfg.language, "prompt": cfg.prompt or ""}
    include = ["item.input_audio_transcription.logprobs"] if cfg.include_logprobs else []
    if beta:
        return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": cfg.input_format,
                "input_audio_transcription": transcription, "turn_detection": td,
                "input_audio_noise_reduction": None, "include": include, "modalities": ["text"]}
    fmt: dict[str, Any] = {"type": _GA_NAMES[cfg.input_format]}
    if cfg.input_format == "pcm16":
        fmt["rate"] = 24000
    return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
            "audio": {"input": {"format": fmt, "transcription": transcription, "turn_detection": td,
                                "noise_reduction": None}},
            "include": include}


def error_event(exc: BaseException, *, event_id: str | None = None) -> dict[str, Any]:
    """An ``error`` server event for ``exc`` (internals never reach the message)."""
    from voxbox.errors import CapacityError, NotFoundError, VoxboxError

    if isinstance(exc, ProtocolError):
        err = {"type": exc.kind, "code": exc.code, "message": exc.message, "param": exc.param,
               "event_id": exc.event_id or event_id}
    elif isinstance(exc, NotFoundError):
        err = {"type": "invalid_request_error", "code": "model_not_found", "message": exc.message,
               "param": "session.audio.input.transcription.model", "event_id": event_id}
    elif isinstance(exc, CapacityError):
        err = {"type": "server_error", "code": "rate_limit_exceeded", "message": exc.message, "param": None,
               "event_id": event_id}
    elif isinstance(exc, BadInputError):
        err = {"type": "invalid_request_error", "code": "invalid_value", "message": exc.message,
               "param": exc.param, "event_id": event_id}
    elif isinstance(exc, VoxboxError):
        err = {"type": "server_error", "code": "server_error", "message": exc.message, "param": None,
               "event_id": event_id}
    else:
        err = {"type": "server_error", "code": "server_error",
               "message": "the server failed to process the event (see the server log)", "param": None,
               "event_id": event_id}
    return {"type": "error", "event_id": new_id("event"), "error": err}
