"""POST /v1/audio/speech/timestamps: where the speech is in an upload (Silero VAD).

Not an OpenAI route (OpenAI has no VAD API); the shape follows speaches' route of the same path:
multipart ``file`` plus optional tuning fields, answered with a JSON list of
``{"start": ms, "end": ms}`` regions. The VAD model is tiny and needs no admission slot; the
upload is decoded and scored in the runtime's worker threads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from voxbox.audio.vad import VadOptions, speech_timestamps
from voxbox.errors import AudioDecodeError, BadInputError
from voxbox.server.errors import ERROR_RESPONSES
from voxbox.server.routes.common import (
    form_file,
    form_float,
    form_str,
    read_form,
    state_of,
)
from voxbox.server.schemas import _form_body

__all__ = ["router"]

router = APIRouter()

#: VAD model names accepted in ``model`` (speaches calls its model ``silero_vad_v5``).
VAD_MODELS = ("silero-vad", "silero_vad", "silero_vad_v5", "silero_vad_v6")

_FORM = _form_body({
    "file": {"type": "string", "format": "binary", "description": "Audio file (wav, mp3, flac, ogg, m4a, webm...)."},
    "model": {"type": "string", "enum": list(VAD_MODELS), "default": "silero-vad"},
    "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.5},
    "neg_threshold": {"type": "number", "minimum": 0, "maximum": 1},
    "min_speech_duration_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 250},
    "min_silence_duration_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 1000},
    "speech_pad_ms": {"type": "integer", "minimum": 0, "maximum": 60000, "default": 400},
}, ["file"])

_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "Speech regions in milliseconds of the upload's timeline.",
    "content": {"application/json": {"schema": {"type": "array", "items": {
        "type": "object", "required": ["start", "end"],
        "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}}},
        "example": [{"start": 420, "end": 3104}]}},
}}


def _ms(form: Any, name: str, default: int) -> int:
    value = form_float(form, name)
    if value is None:
        return default
    if value != int(value):
        raise BadInputError(f"field {name!r} must be a whole number of milliseconds", param=name)
    return int(value)


def _options(form: Any) -> VadOptions:
    model = form_str(form, "model", max_chars=64)
    if model is not None and model not in VAD_MODELS:
        raise BadInputError(f"model must be one of {', '.join(VAD_MODELS)}", param="model")
    threshold = form_float(form, "threshold", 0.5)
    return VadOptions(
        threshold=0.5 if threshold is None else threshold,
        neg_threshold=form_float(form, "neg_threshold"),
        min_speech_ms=_ms(form, "min_speech_duration_ms", 250),
        min_silence_ms=_ms(form, "min_silence_duration_ms", 1000),
        speech_pad_ms=_ms(form, "speech_pad_ms", 400),
    ).check()


def _run(data: bytes, max_seconds: float, opts: VadOptions) -> list[dict[str, int]]:
    from voxbox.audio.decode import decode

    audio = decode(data, sample_rate=16000, max_duration=max_seconds)
    return [{"start": round(s.start * 1000), "end": round(s.end * 1000)}
            for s in speech_timestamps(audio, opts)]


@router.post("/v1/audio/speech/timestamps", responses={**_RESPONSE, **ERROR_RESPONSES}, openapi_extra=_FORM,
             response_class=Response, status_code=200)
async def speech_timestamps_route(request: Request) -> Response:
    """Speech regions of an upload (Silero VAD; a voxbox extension, speaches-compatible)."""
    state = state_of(request)
    form = await read_form(request)
    try:
        opts = _options(form)
        data, _name = await form_file(form, "file")
    finally:
        await form.close()
    if not data:
        raise AudioDecodeError("the uploaded file is empty", param="file")
    regions = await state.runtime.run(_run, data, state.settings.max_audio_seconds, opts)
    return JSONResponse(regions)
