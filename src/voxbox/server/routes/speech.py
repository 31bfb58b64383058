"""POST /v1/audio/speech: chunked audio or SSE, flowing as soon as the engine yields its first chunk.

Everything that can fail on the request's fault (validation, model, voice, the engine's own
argument checks, the first chunk) happens before the response starts, so it gets a real status.
Engine steps run in the worker pool one chunk at a time; when the client goes away the next step is
never started, the engine's stream is closed, and the slot is freed.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import json
import logging
import time
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request

from voxbox.errors import UnsupportedOperationError, VoxboxTimeoutError
from voxbox.server.middleware import ServerTiming, timing_of
from voxbox.server.routes.common import ManagedStream, state_of
from voxbox.server.schemas import SpeechRequest
from voxbox.server.state import ServerState, Work

__all__ = ["router"]

log = logging.getLogger("voxbox.server")
router = APIRouter()

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


_PCM_RATE = 24000


def _media_type(fmt: str) -> str:
    try:
        from voxbox.audio.encode import MIME_TYPES

        return MIME_TYPES.get(fmt, MEDIA_TYPES[fmt])
    except ImportError:
        return MEDIA_TYPES[fmt]


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


#: Chunks the producer may synthesize ahead of what has been sent. A disconnect stops generation
#: after the chunk in progress (SpeechStream.close()); the look-ahead only bounds buffered audio.
_LOOKAHEAD = 2


class SpeechJob:
    """One synthesis, produced in a worker thread and consumed by the response on the event loop.

    The producer owns the engine's stream: it creates it (so the engine's own validation errors
    surface before the response starts), steps it chunk by chunk, encodes, and hands bytes to the
    loop through an asyncio queue without waiting for the loop between chunks. ``finish()`` (end,
    disconnect, timeout, shutdown) sets a stop flag; the producer closes the stream after the
    chunk in progress and the slot is freed on the loop.
    """

    def __init__(self, state: ServerState, work: Work, make_stream: Callable[[], Any], make_encoder: Callable[[int], Any],
                 timing: ServerTiming, text: str, sse: bool) -> None:
        self.state = state
        self.work = work
        self._make_stream = make_stream
        self._make_encoder = make_encoder
        self.timing = timing
        self.text = text
        self.sse = sse
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._ahead = threading.Semaphore(_LOOKAHEAD)
        self.stream: Any = None
        self.engine_seconds = 0.0
        self.encode_seconds = 0.0
        self.audio_seconds = 0.0
        self.chunks = 0
        self.completed = False  # the engine's stream ran to its end
        self.finished = False  # finish() was called
        self.streaming = False  # the response body has started
        self._released = False

    # -- worker-thread side --------------------------------------------------------------------
    def _post(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (hard shutdown): nobody is listening
            pass

    def _produce(self) -> None:
        encoder = None
        try:
            self.stream = self._make_stream()
            encoder = self._make_encoder(self.stream.sample_rate)
            while not self._stop.is_set():
                while not self._ahead.acquire(timeout=0.25):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    chunk = next(self.stream)
                except StopIteration:
                    chunk = None
                t1 = time.perf_counter()
                self.engine_seconds += t1 - t0
                if chunk is None:
                    data = encoder.close()
                else:
                    self.chunks += 1
                    self.audio_seconds += len(chunk.samples) / chunk.sample_rate
                    data = encoder.feed(chunk.samples)
                self.encode_seconds += time.perf_counter() - t1
                if chunk is None:
                    self.completed = True
                    self._post("data", (data or b"", True))
                    return
                self._post("data", (data or b"", False))
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            self._post("error", exc)
        finally:
            if self.stream is not None and not self.completed:
                try:
                    self.stream.close()  # stops the engine's generator
                except Exception:  # noqa: BLE001
                    log.exception("closing a speech stream failed")
            if encoder is not None and not self.completed:
                try:
                    encoder.abort()
                except Exception:  # noqa: BLE001
                    pass
            self._post("closed")

    # -- event-loop side -----------------------------------------------------------------------
    def start(self) -> None:
        self.state.executor.submit(self._produce)

    async def _next(self, timeout: float | None = None) -> tuple[bytes, bool]:
        while True:
            if timeout is None:
                kind, value = await self.queue.get()
            else:
                try:
                    kind, value = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    raise VoxboxTimeoutError(f"speech did not start within {timeout:.1f} s") from None
            if kind == "data":
                self._ahead.release()
                return value
            if kind == "error":
                raise value
            if kind == "closed":
                self._release()
                return b"", True

    async def prime(self) -> bytes:
        """Wait for the first encoded bytes (time to first audio)."""
        out = b""
        while not out:
            out, done = await self._next(timeout=max(0.001, self.work.remaining()))
            if done:
                break
        return out

    def _record_stages(self) -> None:
        if self.stream is not None:
            for stage, seconds in self.stream.timings.as_dict().items():
                self.timing.set(stage, seconds)
        self.timing.set("encode", self.encode_seconds)

    async def body(self, first: bytes) -> AsyncIterator[bytes]:
        try:
            if first:
                yield self._frame(first)
            self.streaming = True
            while True:
                if time.monotonic() > self.work.deadline:
                    log.warning("speech stream hit the request timeout; stopping")
                    break
                try:
                    data, done = await self._next()
                except Exception as exc:  # the engine failed mid-stream: the status is already sent
                    from voxbox.server.errors import error_body

                    log.error("speech stream failed after %d chunk(s): %s", self.chunks, exc, exc_info=exc)
                    if self.sse:
                        yield _sse({"type": "error", **error_body(exc)})
                    return
                if data:
                    yield self._frame(data)
                if done:
                    break
            if self.sse and self.completed:
                stages = self.timing.as_dict()
                stages.update(self.stream.timings.as_dict())  # totals replace the first-chunk snapshot
                stages["encode"] = self.encode_seconds
                timings = {k: round(v * 1000, 2) for k, v in stages.items()}
                timings["total"] = round(self.timing.elapsed() * 1000, 2)
                n_in = len(self.text.split())
                yield _sse({
                    "type": "speech.audio.done",
                    "usage": {"input_tokens": n_in, "output_tokens": 0, "total_tokens": n_in},
                    # voxbox extensions (the OpenAI schema allows extra properties):
                    "audio_seconds": round(self.audio_seconds, 3),
                    "timings_ms": timings,
                })
        finally:
            self.finish()

    def _frame(self, data: bytes) -> bytes:
        if self.sse:
            return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        return data

    def finish(self) -> None:
        """Idempotent: stop generation after the chunk in progress; the slot is freed once the
        producer has closed the engine's stream."""
        if self.finished:
            return
        self.finished = True
        self._stop.set()
        self._ahead.release()  # wake a producer waiting for look-ahead room
        if self.streaming and not self.completed:
            self.state.metrics.cancelled.labels(self.work.label).inc()
            log.info("speech stream stopped early after %d chunk(s)", self.chunks)
        # Drain the queue in the background until the producer says "closed".
        if not self._released:
            self.state.spawn(self._drain())

    async def _drain(self) -> None:
        while not self._released:
            kind, _value = await self.queue.get()
            if kind == "closed":
                self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.work.release()
        m = self.state.metrics
        if self.audio_seconds > 0:
            m.audio_produced.labels(self.work.label).inc(self.audio_seconds)
            m.rtf.labels(self.work.label).observe(self.engine_seconds / self.audio_seconds)


async def _resolve_voice(state: ServerState, work: Work, name: str, timing: ServerTiming) -> Any:
    """Built-in and OpenAI names go to the engine as-is; uploaded voices become cached encodings."""
    info = work.engine.info
    openai_map = (info.extra or {}).get("openai_voices") or {}
    lname = name.strip().lower()
    if lname in info.voices or lname in openai_map or name in info.voices:
        return name
    stored = state.voices.get(name)
    if stored is None:
        return name  # the engine knows its own voices and raises VoiceNotFoundError (404) otherwise
    if not info.supports_cloning:
        raise UnsupportedOperationError(
            f"voice {name!r} is an uploaded reference voice, but model {work.label!r} cannot clone voices; "
            f"use one of its built-in voices ({', '.join(info.voices) or 'none'}) or a cloning engine",
            param="voice",
        )
    engine = work.engine

    def encode(clip: bytes, transcript: str | None) -> Any:
        from voxbox.audio.decode import decode

        audio = decode(clip, max_duration=state.settings.voices.max_clip_seconds)
        return engine.encode_voice(audio, transcript)

    t0 = time.perf_counter()
    enc, where = await state.run(state.voices.encoding, stored, info.name, str(info.model), encode)
    timing.set("voice", time.perf_counter() - t0)
    state.metrics.voice_cache.labels(where).inc()  # memory | disk (hits) or miss (encoded now)
    return enc


@router.post("/v1/audio/speech")
async def create_speech(req: SpeechRequest, request: Request) -> ManagedStream:
    from voxbox.audio.encode import StreamEncoder
    from voxbox.engines.base import validate_speed, validate_text

    state = state_of(request)
    timing = timing_of(request)
    text = validate_text(req.input)
    speed = validate_speed(req.speed)
    work = await state.acquire(req.model, "tts", timing)
    job: SpeechJob | None = None
    try:
        voice = await _resolve_voice(state, work, req.voice_name, timing)
        engine = work.engine
        # OpenAI's pcm is 24 kHz 16-bit mono; clients assume that rate.
        out_rate = _PCM_RATE if req.response_format == "pcm" else None
        job = SpeechJob(
            state, work,
            make_stream=lambda: engine.stream(text, voice=voice, speed=speed),
            make_encoder=lambda rate: StreamEncoder(req.response_format, rate, output_rate=out_rate),
            timing=timing, text=text, sse=req.stream_format == "sse",
        )
        job.start()
        first = await job.prime()
    except BaseException:
        if job is not None:
            job.finish()
        else:
            work.release()
        raise
    ttfa = timing.elapsed()
    timing.set("ttfa", ttfa)
    job._record_stages()
    state.metrics.ttfa.labels(work.label).observe(ttfa)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if job.sse:
        return ManagedStream(job.body(first), on_close=job.finish, media_type="text/event-stream", headers=headers)
    return ManagedStream(job.body(first), on_close=job.finish, media_type=_media_type(req.response_format),
                         headers=headers)
