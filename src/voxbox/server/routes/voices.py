"""GET/POST /v1/voices, DELETE /v1/voices/{name}: built-in voices and uploaded reference clips."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from voxbox.errors import AudioDecodeError, BadInputError
from voxbox.runtime.voices import StoredVoice, validate_voice_name
from voxbox.server.errors import ERROR_RESPONSES
from voxbox.server.middleware import timing_of
from voxbox.server.routes.common import form_file, form_str, read_form, state_of
from voxbox.server.schemas import VOICE_FORM, VoiceObject, list_body

__all__ = ["OPENAI_VOICES", "router"]

router = APIRouter()

#: Names an OpenAI client may send; uploads may not shadow them.
OPENAI_VOICES = frozenset(
    ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar")
)


def _uploaded(v: StoredVoice, cloning_models: list[str]) -> dict[str, Any]:
    return VoiceObject(id=v.name, name=v.name, type="uploaded", models=cloning_models, sha256=v.sha256,
                       transcript=v.transcript, created=v.created, bytes=v.bytes,
                       duration=v.duration).model_dump(exclude_none=True)


@router.get("/v1/voices", responses=ERROR_RESPONSES)
async def list_voices(request: Request, model: str | None = None) -> dict[str, Any]:
    """Built-in voices of loaded speech models (or of ``?model=``, loading it) and uploaded voices."""
    state = state_of(request)
    rt = state.runtime
    builtin: dict[str, VoiceObject] = {}
    models = [m for m in rt.manager.loaded() if m.task == "tts"]
    if model is not None:
        models = [await rt.manager.load(rt.catalog.resolve(model, "tts"))]
    for m in models:
        info, label = m.engine.info, m.name
        openai = (info.extra or {}).get("openai_voices", {}) or {}
        for name in list(info.voices) + sorted(openai):
            v = builtin.setdefault(name, VoiceObject(id=name, name=name, type="builtin"))
            v.models.append(label)
            if name in openai and openai[name] != name:
                v.alias_of = {**(v.alias_of or {}), label: openai[name]}
                note = (info.extra or {}).get("voice_note")
                v.note = f"{v.note} {note}" if v.note and note else (note or v.note)
    data = [v.model_dump(exclude_none=True) for v in builtin.values()]
    from voxbox.engines.registry import get_spec

    cloning = [e.name for e in rt.catalog.entries("tts") if get_spec(e.engine).capabilities.cloning]
    data += [_uploaded(v, cloning) for v in state.voices.list()]
    return list_body(data)


@router.post("/v1/voices", status_code=201, responses=ERROR_RESPONSES, openapi_extra=VOICE_FORM)
async def create_voice(request: Request) -> JSONResponse:
    """Upload a reference clip (+ transcript) under a name (voxbox extension)."""
    from voxbox.audio.decode import decode

    state = state_of(request)
    form = await read_form(request)
    try:
        name = validate_voice_name(form_str(form, "name", required=True, max_chars=64))
        if name.lower() in OPENAI_VOICES:
            raise BadInputError(f"{name!r} is an OpenAI voice name; choose another name", param="name")
        transcript = form_str(form, "transcript", max_chars=state.settings.voices.max_transcript_chars)
        data, _ = await form_file(form, "file")
    finally:
        await form.close()  # spooled upload files

    if not data:
        raise AudioDecodeError("the uploaded reference clip is empty", param="file")
    t0 = time.perf_counter()
    max_clip = state.settings.voices.max_clip_seconds
    audio = await state.runtime.run(lambda: decode(data, max_duration=max_clip))
    timing_of(request).set("decode_audio", time.perf_counter() - t0)
    voice = await state.runtime.run(lambda: state.voices.add(name, data, transcript, duration=round(audio.duration, 3)))
    return JSONResponse(_uploaded(voice, []), status_code=201)


@router.delete("/v1/voices/{name}", responses=ERROR_RESPONSES)
async def delete_voice(name: str, request: Request) -> dict[str, Any]:
    """Delete an uploaded voice (voxbox extension)."""
    state = state_of(request)
    voice = await state.runtime.run(state.voices.delete, name)
    return {"id": voice.name, "object": "voice", "deleted": True}
