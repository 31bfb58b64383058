"""POST /v1/audio/transcriptions and /v1/audio/translations (multipart; JSON, text, subtitles, SSE).

Order of work, cheapest refusal first: parse the form (the body is already bounded), resolve the
model name (404), take an admission slot (429 costs nothing), then decode the upload inside the
slot (bounded before decoding), then transcribe in a worker thread. A client that disconnects or
a request that times out sets the work's cancel token: the engine stops at its next window and
the slot is freed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voxbox.audio.vad import VadOptions
from voxbox.errors import AudioDecodeError, BadInputError, UnsupportedOperationError
from voxbox.formats import format_transcript, transcript_dict
from voxbox.runtime import Work
from voxbox.runtime.vad import transcribe_speech
from voxbox.server.errors import ERROR_RESPONSES
from voxbox.server.middleware import ServerTiming, timing_of
from voxbox.server.routes.common import (
    ManagedStream,
    cancel_on_disconnect,
    form_bool,
    form_file,
    form_float,
    form_str,
    read_form,
    sse,
    state_of,
)
from voxbox.server.schemas import TRANSCRIPT_FORMATS, TRANSCRIPTION_FORM, TRANSCRIPTION_RESPONSE
from voxbox.server.state import ServerState
from voxbox.types import Segment, TranscriptionInfo

__all__ = ["router"]

router = APIRouter()

#: Whisper's input rate: decoding straight to it avoids a second resample in the engine.
_ASR_RATE = 16000
_MAX_PROMPT_CHARS = 4096


def format_response(segments: list[Segment], info: TranscriptionInfo, fmt: str, task: str,
                    granularities: set[str]) -> Response:
    """The OpenAI response for ``response_format`` (shapes from ``voxbox.formats``)."""
    if fmt in ("json", "verbose_json"):
        body = transcript_dict(segments, info, fmt, words="word" in granularities)
        if task == "translate":
            body.pop("usage", None)  # OpenAI's translation bodies carry no usage
            if fmt == "verbose_json":
                body["language"] = "english"
        return JSONResponse(body)
    return PlainTextResponse(format_transcript(segments, info, fmt))


@dataclass
class _Request:
    model: str
    fmt: str
    language: str | None
    prompt: str | None
    temperature: float | None
    granularities: set[str]
    stream: bool
    vad: bool


def _parse(form: FormData, task: str, vad_default: bool) -> _Request:
    model = form_str(form, "model", required=True, max_chars=256) or ""
    fmt = form_str(form, "response_format", default="json") or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise BadInputError(f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}, got {fmt[:40]!r}",
                            param="response_format")
    temperature = form_float(form, "temperature")
    if temperature is not None and not 0.0 <= temperature <= 1.0:
        raise BadInputError("temperature must be between 0 and 1", param="temperature")
    grans: set[str] = set()
    for key in ("timestamp_granularities[]", "timestamp_granularities"):
        for value in form.getlist(key):
            if not isinstance(value, str) or value not in ("word", "segment"):
                raise BadInputError("timestamp_granularities items must be 'word' or 'segment'",
                                    param="timestamp_granularities")
            grans.add(value)
    language = form_str(form, "language", max_chars=16) if task == "transcribe" else None
    return _Request(
        model=model, fmt=fmt, language=language, prompt=form_str(form, "prompt", max_chars=_MAX_PROMPT_CHARS),
        temperature=temperature, granularities=grans, stream=form_bool(form, "stream"),
        vad=form_bool(form, "vad", default=vad_default),
    )


def vad_options(settings: Any) -> VadOptions:
    """The file-transcription VAD settings (``VOXBOX_ASR__VAD_*``) as VadOptions."""
    a = settings.asr
    return VadOptions(threshold=a.vad_threshold, min_silence_ms=a.vad_min_silence_ms,
                      speech_pad_ms=a.vad_speech_pad_ms)


def _start(work: Work, audio: Any, req: _Request, task: str,
           vad: VadOptions | None) -> tuple[Iterator[Segment], TranscriptionInfo]:
    engine = work.engine
    if task == "translate" and not engine.info.supports_translation:
        raise UnsupportedOperationError(
            f"model {work.entry.name!r} cannot translate (it is English-only or has no translate task); "
            f"use a multilingual model", param="model")
    values: dict[str, Any] = {}
    if req.temperature is not None:
        values["temperature"] = req.temperature
    options = work.spec.make_options(values)
    if vad is not None:
        return transcribe_speech(engine, audio, req.language, req.prompt, "word" in req.granularities, task,
                                 options, cancel=work.cancel, vad=vad)
    return engine.transcribe(audio, req.language, req.prompt, "word" in req.granularities, task, options,  # type: ignore[no-any-return]
                             cancel=work.cancel)


def _decode(data: bytes, max_seconds: float) -> Any:
    from voxbox.audio.decode import decode

    return decode(data, sample_rate=_ASR_RATE, max_duration=max_seconds)


def _finish_metrics(state: ServerState, work: Work, info: TranscriptionInfo, engine_seconds: float) -> None:
    if info.duration > 0:
        state.metrics.audio_consumed.labels(work.label).inc(info.duration)
        state.metrics.rtf.labels(work.label).observe(engine_seconds / info.duration)


async def _handle(request: Request, task: str) -> Response:
    state = state_of(request)
    rt = state.runtime
    timing = timing_of(request)
    form = await read_form(request)
    try:
        req = _parse(form, task, state.settings.asr.vad)
        data, _filename = await form_file(form, "file")
    finally:
        await form.close()  # spooled upload files
    if not data:
        raise AudioDecodeError("the uploaded file is empty", param="file")
    entry = rt.catalog.resolve(req.model, "asr")
    async with cancel_on_disconnect(request):
        work = await rt.open(entry)
        timing.set("load", work.load_seconds)
        timing.set("queue", work.queue_seconds)
        try:
            t0 = time.perf_counter()
            audio = await rt.call(work, _decode, data, state.settings.max_audio_seconds)
            del data
            timing.set("decode_audio", time.perf_counter() - t0)
            t0 = time.perf_counter()
            vad = vad_options(state.settings) if req.vad else None
            segments, info = await rt.call(work, _start, work, audio, req, task, vad)
            if req.stream:
                return _stream(state, work, segments, info, timing)
            collected: list[Segment] = await rt.call(work, list, segments)
            engine_seconds = time.perf_counter() - t0
        except BaseException:
            work.close("failed")
            raise
    work.close()
    timing.update(info.timings.as_dict())
    t1 = time.perf_counter()
    response = format_response(collected, info, req.fmt, task, req.granularities)
    timing.set("format", time.perf_counter() - t1)
    _finish_metrics(state, work, info, engine_seconds)
    return response


def _stream(state: ServerState, work: Work, segments: Iterator[Segment], info: TranscriptionInfo,
            timing: ServerTiming) -> Response:
    items = state.runtime.iterate(work, lambda: segments)
    t0 = time.perf_counter()

    async def body() -> AsyncIterator[bytes]:
        parts: list[str] = []
        try:
            async for seg in _until(items, work):
                parts.append(seg.text)
                yield sse({"type": "transcript.text.delta", "delta": seg.text})
            stages = timing.as_dict()
            stages.update(info.timings.as_dict())
            timings = {k: round(v * 1000, 2) for k, v in stages.items()}
            timings["total"] = round(timing.elapsed() * 1000, 2)
            yield sse({
                "type": "transcript.text.done",
                "text": "".join(parts).strip(),
                # voxbox extensions (the OpenAI schema allows extra properties):
                "language": info.language,
                "duration": round(float(info.duration), 3),
                "timings_ms": timings,
            })
        finally:
            await items.aclose()

    def finish() -> None:
        _finish_metrics(state, work, info, time.perf_counter() - t0)
        work.close("the client went away")

    return ManagedStream(body(), on_close=finish, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _until(items: Any, work: Work) -> AsyncIterator[Segment]:
    while not work.cancel.cancelled:
        try:
            yield await items.next(timeout=work.remaining())
        except StopAsyncIteration:
            return


@router.post("/v1/audio/transcriptions", responses={**TRANSCRIPTION_RESPONSE, **ERROR_RESPONSES},
             openapi_extra=TRANSCRIPTION_FORM, response_class=Response, status_code=200)
async def create_transcription(request: Request) -> Response:
    """Transcribe audio into the input language (OpenAI ``createTranscription``)."""
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations", responses={**TRANSCRIPTION_RESPONSE, **ERROR_RESPONSES},
             openapi_extra=TRANSCRIPTION_FORM, response_class=Response, status_code=200)
async def create_translation(request: Request) -> Response:
    """Translate audio into English (OpenAI ``createTranslation``)."""
    return await _handle(request, "translate")
