"""POST /v1/audio/speech: chunked audio or SSE, flowing as soon as the engine yields its first chunk.

Everything that can fail on the request's fault (validation, model name, voice, the engine's own
argument checks, the first chunk) happens before the response starts, so it gets a real status.
The engine's chunks are encoded in the runtime's worker thread (:meth:`Runtime.iterate`) a couple
of chunks ahead of the network; when the client goes away the work's cancel token stops the
engine after the chunk in progress and the slot is freed.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from fastapi import APIRouter, Request

from voxbox.audio.encode import MIME_TYPES, StreamEncoder
from voxbox.engines.base import SpeechStream, validate_speed, validate_text
from voxbox.runtime import Work
from voxbox.runtime.streams import ThreadedIterator
from voxbox.server.errors import ERROR_RESPONSES, error_body
from voxbox.server.middleware import ServerTiming, timing_of
from voxbox.server.routes.common import ManagedStream, cancel_on_disconnect, sse, state_of
from voxbox.server.schemas import SPEECH_RESPONSE, SpeechRequest
from voxbox.server.state import ServerState

__all__ = ["router"]

log = logging.getLogger("voxbox.server")
router = APIRouter()

#: OpenAI's pcm is 24 kHz 16-bit mono; clients assume that rate.
PCM_RATE = 24000


@dataclass
class _Stats:
    chunks: int = 0
    audio_seconds: float = 0.0
    engine_seconds: float = 0.0
    encode_seconds: float = 0.0
    completed: bool = False


def _encoded(stream: SpeechStream, encoder: StreamEncoder, stats: _Stats) -> Iterator[bytes]:
    """The engine's chunks encoded, in the worker thread; the encoder is aborted if cut short."""
    try:
        while True:
            t0 = time.perf_counter()
            chunk = next(stream, None)
            t1 = time.perf_counter()
            stats.engine_seconds += t1 - t0
            if chunk is None:
                tail = encoder.close()
                stats.encode_seconds += time.perf_counter() - t1
                stats.completed = True
                if tail:
                    yield tail
                return
            stats.chunks += 1
            stats.audio_seconds += chunk.duration
            data = encoder.feed(chunk.samples)
            stats.encode_seconds += time.perf_counter() - t1
            if data:
                yield data
    finally:
        if not stats.completed:
            encoder.abort()
            stream.close()


class _SpeechResponse:
    """The body of one speech response and what happens when it ends."""

    def __init__(self, state: ServerState, work: Work, stream: SpeechStream, items: ThreadedIterator[bytes],
                 stats: _Stats, timing: ServerTiming, text: str, is_sse: bool) -> None:
        self.state, self.work, self.stream, self.items = state, work, stream, items
        self.stats, self.timing, self.text, self.sse = stats, timing, text, is_sse
        self.finished = False

    def frame(self, data: bytes) -> bytes:
        if self.sse:
            return sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        return data

    async def body(self, first: bytes) -> AsyncIterator[bytes]:
        try:
            if first:
                yield self.frame(first)
            while not self.work.cancel.cancelled:  # cancelled: deadline or shutdown; end the body now
                try:
                    data = await self.items.next(timeout=self.work.remaining())
                except StopAsyncIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - the status is sent: end the stream cleanly
                    log.warning("speech stream for %s ended early after %d chunk(s): %s", self.work.label,
                                self.stats.chunks, exc)
                    if self.sse:
                        yield sse({"type": "error", **error_body(exc)})
                    return
                yield self.frame(data)
            if self.sse and self.stats.completed:
                yield sse(self.done_event())
        finally:
            await self.items.aclose()

    def done_event(self) -> dict[str, Any]:
        stages = self.timing.as_dict()
        stages.update(self.stream.timings.as_dict())  # totals replace the first-chunk snapshot
        stages["encode"] = self.stats.encode_seconds
        timings = {k: round(v * 1000, 2) for k, v in stages.items()}
        timings["total"] = round(self.timing.elapsed() * 1000, 2)
        words = len(self.text.split())
        return {
            "type": "speech.audio.done",
            # voxbox has no tokenizer for TTS input: input_tokens counts whitespace-separated words.
            "usage": {"input_tokens": words, "output_tokens": 0, "total_tokens": words},
            # voxbox extensions (the OpenAI schema allows extra properties):
            "audio_seconds": round(self.stats.audio_seconds, 3),
            "timings_ms": timings,
        }

    def finish(self) -> None:
        """Idempotent: the response ended (last byte, disconnect, shutdown)."""
        if self.finished:
            return
        self.finished = True
        m, label = self.state.metrics, self.work.label
        if not self.stats.completed:
            m.cancelled.labels(label).inc()
            log.info("speech stream for %s stopped early after %d chunk(s)", label, self.stats.chunks)
        if self.stats.audio_seconds > 0:
            m.audio_produced.labels(label).inc(self.stats.audio_seconds)
            m.rtf.labels(label).observe(self.stats.engine_seconds / self.stats.audio_seconds)
        self.work.close("the client went away" if not self.stats.completed else "done")


def _speech_options(work: Work, req: SpeechRequest) -> Any:
    """HTTP fields -> the engine's Options: ``instructions`` is a voice description where the
    engine has one (voice design), and is otherwise ignored as OpenAI's models treat it as a hint."""
    fields = {f for f in getattr(work.spec.options, "__dataclass_fields__", {})}
    values: dict[str, Any] = {}
    if req.instructions and "voice_description" in fields:
        values["voice_description"] = req.instructions
    return work.spec.make_options(values)


@router.post("/v1/audio/speech", responses={**SPEECH_RESPONSE, **ERROR_RESPONSES}, response_class=ManagedStream,
             status_code=200)
async def create_speech(req: SpeechRequest, request: Request) -> ManagedStream:
    """Generate audio from the input text (OpenAI ``createSpeech``)."""
    state = state_of(request)
    rt = state.runtime
    timing = timing_of(request)
    text = validate_text(req.input, state.settings.max_speech_chars)
    speed = validate_speed(req.speed)
    entry = rt.catalog.resolve(req.model, "tts")
    async with cancel_on_disconnect(request):
        work = await rt.open(entry)
        timing.set("load", work.load_seconds)
        timing.set("queue", work.queue_seconds)
        try:
            response = await _start(state, work, req, text, speed, timing)
            first = await response.items.next(timeout=work.remaining())
        except StopAsyncIteration:
            first = b""
        except BaseException:
            work.close("failed before the first chunk")
            raise
    ttfa = timing.elapsed()
    timing.set("ttfa", ttfa)
    for stage, seconds in response.stream.timings.as_dict().items():
        timing.set(stage, seconds)
    timing.set("encode", response.stats.encode_seconds)
    state.metrics.ttfa.labels(work.label).observe(ttfa)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    media = "text/event-stream" if response.sse else MIME_TYPES.get(req.response_format, "application/octet-stream")
    return ManagedStream(response.body(first), on_close=response.finish, media_type=media, headers=headers)


async def _start(state: ServerState, work: Work, req: SpeechRequest, text: str, speed: float,
                 timing: ServerTiming) -> _SpeechResponse:
    """Resolve the voice, let the engine validate the call, and start the worker."""
    from voxbox.audio.decode import decode

    rt = state.runtime
    max_clip = state.settings.voices.max_clip_seconds
    t0 = time.perf_counter()
    voice, where = await rt.voice_for(work, req.voice_name, lambda clip: decode(clip, max_duration=max_clip))
    if where is not None:
        timing.set("voice", time.perf_counter() - t0)
        state.metrics.voice_cache.labels(where).inc()  # memory | disk (hits) or miss (encoded now)
    options = _speech_options(work, req)
    engine = work.engine
    stream: SpeechStream = await rt.call(work, engine.stream, text, voice, speed, options, cancel=work.cancel)
    out_rate = PCM_RATE if req.response_format == "pcm" else None
    encoder = StreamEncoder(req.response_format, stream.sample_rate, output_rate=out_rate)
    stats = _Stats()
    items = rt.iterate(work, lambda: _encoded(stream, encoder, stats))
    return _SpeechResponse(state, work, stream, items, stats, timing, text, req.stream_format == "sse")
