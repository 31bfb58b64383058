"""POST /v1/audio/transcriptions and /v1/audio/translations (multipart; JSON, text, subtitles, SSE)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, AsyncIterator, Iterator

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voxbox.errors import AudioDecodeError, BadInputError, UnsupportedOperationError, VoxboxTimeoutError
from voxbox.server.middleware import ServerTiming, timing_of
from voxbox.server.routes.common import (
    ManagedStream,
    form_bool,
    form_file,
    form_float,
    form_str,
    read_form,
    state_of,
)
from voxbox.server.schemas import TRANSCRIPT_FORMATS
from voxbox.server.state import ServerState, Work
from voxbox.types import Segment, TranscriptionInfo

__all__ = ["router"]

router = APIRouter()

#: Whisper's input rate: decoding straight to it avoids a second resample in the engine.
_ASR_RATE = 16000


# --- formatting ----------------------------------------------------------------------------------------

def format_response(segments: list[Segment], info: TranscriptionInfo, fmt: str, task: str,
                    granularities: set[str]) -> Response:
    """The OpenAI response for ``response_format`` (shapes from ``voxbox.formats``)."""
    from voxbox.formats import format_transcript, transcript_dict

    if fmt in ("json", "verbose_json"):
        body = transcript_dict(segments, info, fmt, words="word" in granularities)
        if task == "translate":
            body.pop("usage", None)  # OpenAI's translation bodies carry no usage
            if fmt == "verbose_json":
                body["language"] = "english"
        return JSONResponse(body)
    return PlainTextResponse(format_transcript(segments, info, fmt))


# --- the route -----------------------------------------------------------------------------------------

class _Request:
    def __init__(self, *, model: str, fmt: str, language: str | None, prompt: str | None,
                 temperature: float | None, granularities: set[str], stream: bool) -> None:
        self.model = model
        self.fmt = fmt
        self.language = language
        self.prompt = prompt
        self.temperature = temperature
        self.granularities = granularities
        self.stream = stream


def _parse(form: Any, task: str) -> _Request:
    model = form_str(form, "model", required=True)
    fmt = form_str(form, "response_format", default="json")
    if fmt not in TRANSCRIPT_FORMATS:
        raise BadInputError(f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}, got {fmt!r}",
                            param="response_format")
    temperature = form_float(form, "temperature")
    if temperature is not None and not 0.0 <= temperature <= 1.0:
        raise BadInputError("temperature must be between 0 and 1", param="temperature")
    grans: set[str] = set()
    for key in ("timestamp_granularities[]", "timestamp_granularities"):
        for value in form.getlist(key):
            if not isinstance(value, str) or value not in ("word", "segment"):
                raise BadInputError(f"timestamp_granularities items must be 'word' or 'segment', got {value!r}",
                                    param="timestamp_granularities")
            grans.add(value)
    language = form_str(form, "language") if task == "transcribe" else None
    return _Request(model=model or "", fmt=fmt or "json", language=language, prompt=form_str(form, "prompt"),
                    temperature=temperature, granularities=grans, stream=form_bool(form, "stream"))


async def _decode(state: ServerState, data: bytes, timing: ServerTiming) -> Any:
    from voxbox.audio.decode import decode

    if not data:
        raise AudioDecodeError("the uploaded file is empty", param="file")
    t0 = time.perf_counter()
    audio = await state.run(lambda: decode(data, sample_rate=_ASR_RATE, max_duration=state.settings.max_audio_seconds))
    timing.set("decode_audio", time.perf_counter() - t0)
    return audio


def _start(work: Work, audio: Any, req: _Request, task: str) -> tuple[Iterator[Segment], TranscriptionInfo]:
    engine = work.engine
    if task == "translate" and not engine.info.supports_translation:
        raise UnsupportedOperationError(
            f"model {work.label!r} cannot translate (it is English-only or has no translate task); "
            f"use a multilingual model", param="model")
    kwargs: dict[str, Any] = {}
    if req.temperature is not None:
        kwargs["temperature"] = req.temperature
    return engine.transcribe(audio, language=req.language, prompt=req.prompt,
                             word_timestamps="word" in req.granularities, task=task, **kwargs)


def _collect(segments: Iterator[Segment], cancel: threading.Event) -> list[Segment]:
    out = []
    for seg in segments:
        out.append(seg)
        if cancel.is_set():
            break
    return out


def _finish_metrics(state: ServerState, work: Work, info: TranscriptionInfo, engine_seconds: float) -> None:
    if info.duration > 0:
        state.metrics.audio_consumed.labels(work.label).inc(info.duration)
        state.metrics.rtf.labels(work.label).observe(engine_seconds / info.duration)


async def _handle(request: Request, task: str) -> Response:
    state = state_of(request)
    timing = timing_of(request)
    form = await read_form(request, state.settings.max_upload_bytes)
    try:
        req = _parse(form, task)
        data, _filename = await form_file(form, "file")
    finally:
        await form.close()  # spooled upload files
    audio = await _decode(state, data, timing)
    del data
    work = await state.acquire(req.model, "asr", timing)
    if req.stream:
        return await _stream(state, work, audio, req, task, timing)
    cancel = threading.Event()
    try:
        t0 = time.perf_counter()

        def run() -> tuple[list[Segment], TranscriptionInfo]:
            segments, info = _start(work, audio, req, task)
            return _collect(segments, cancel), info

        fut = asyncio.ensure_future(state.run(run))
        try:
            segments, info = await asyncio.wait_for(asyncio.shield(fut), max(0.001, work.remaining()))
        except asyncio.TimeoutError:
            cancel.set()
            fut.add_done_callback(lambda _f: work.release())
            raise VoxboxTimeoutError("transcription did not finish within the request timeout") from None
        except BaseException:
            if not fut.done():
                cancel.set()
                fut.add_done_callback(lambda _f: work.release())
            raise
        engine_seconds = time.perf_counter() - t0
        timing.update(info.timings.as_dict())
        t1 = time.perf_counter()
        response = format_response(segments, info, req.fmt, task, req.granularities)
        timing.set("format", time.perf_counter() - t1)
        _finish_metrics(state, work, info, engine_seconds)
        return response
    finally:
        if not cancel.is_set():
            work.release()


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def _stream(state: ServerState, work: Work, audio: Any, req: _Request, task: str,
                  timing: ServerTiming) -> Response:
    loop = asyncio.get_running_loop()
    try:
        segments, info = await state.run(_start, work, audio, req, task)
    except BaseException:
        work.release()
        raise
    it = iter(segments)
    box: dict[str, Any] = {"pending": None, "finished": False, "engine": 0.0}

    def step() -> Segment | None:
        t0 = time.perf_counter()
        try:
            return next(it)
        except StopIteration:
            return None
        finally:
            box["engine"] += time.perf_counter() - t0

    def finalize() -> None:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                pass
        work.release()
        _finish_metrics(state, work, info, box["engine"])

    def finish() -> None:
        if box["finished"]:
            return
        box["finished"] = True
        pending = box["pending"]
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _f: loop.call_soon_threadsafe(finalize))
        else:
            finalize()

    async def body() -> AsyncIterator[bytes]:
        parts: list[str] = []
        try:
            while time.monotonic() < work.deadline:
                box["pending"] = state.executor.submit(step)
                seg = await asyncio.wrap_future(box["pending"])
                box["pending"] = None
                if seg is None:
                    break
                parts.append(seg.text)
                yield _sse({"type": "transcript.text.delta", "delta": seg.text})
            stages = timing.as_dict()
            stages.update(info.timings.as_dict())
            timings = {k: round(v * 1000, 2) for k, v in stages.items()}
            timings["total"] = round(timing.elapsed() * 1000, 2)
            yield _sse({
                "type": "transcript.text.done",
                "text": "".join(parts).strip(),
                # voxbox extensions (the OpenAI schema allows extra properties):
                "language": info.language,
                "duration": round(float(info.duration), 3),
                "timings_ms": timings,
            })
        finally:
            finish()

    return ManagedStream(body(), on_close=finish, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations")
async def create_translation(request: Request) -> Response:
    return await _handle(request, "translate")
