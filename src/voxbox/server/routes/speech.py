"""POST /v1/audio/speech: chunked audio or SSE, flowing as soon as the engine yields its first chunk.

Everything that can fail on the request's fault (validation, model, voice, the engine's own
argument checks, the first chunk) happens before the response starts, so it gets a real status.
Engine steps run in the worker pool one chunk at a time; when the client goes away the next step is
never started, the engine's stream is closed, and the slot is freed.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import time
from typing import Any, AsyncIterator

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


class SpeechJob:
    """One synthesis: the engine's stream, the encoder, the slot, and what they measured."""

    def __init__(self, state: ServerState, work: Work, stream: Any, encoder: Any, timing: ServerTiming,
                 text: str, sse: bool) -> None:
        self.state = state
        self.work = work
        self.stream = stream
        self.encoder = encoder
        self.timing = timing
        self.text = text
        self.sse = sse
        self.loop = asyncio.get_running_loop()
        self.pending: concurrent.futures.Future[Any] | None = None
        self.engine_seconds = 0.0
        self.encode_seconds = 0.0
        self.audio_seconds = 0.0
        self.chunks = 0
        self.completed = False
        self.finished = False

    # -- worker-thread side --------------------------------------------------------------------
    def _step(self) -> tuple[bytes, bool]:
        """Next chunk -> encoded bytes (b"" while a codec buffers). Returns (bytes, done)."""
        t0 = time.perf_counter()
        try:
            chunk = next(self.stream)
        except StopIteration:
            chunk = None
        t1 = time.perf_counter()
        self.engine_seconds += t1 - t0
        if chunk is None:
            data = self.encoder.close()
            done = True
        else:
            self.chunks += 1
            self.audio_seconds += len(chunk.samples) / chunk.sample_rate
            data = self.encoder.feed(chunk.samples)
            done = False
        self.encode_seconds += time.perf_counter() - t1
        return data or b"", done

    # -- event-loop side -----------------------------------------------------------------------
    async def step(self, timeout: float | None = None) -> tuple[bytes, bool]:
        self.pending = self.state.executor.submit(self._step)
        fut = asyncio.wrap_future(self.pending, loop=self.loop)
        if timeout is None:
            result = await fut
        else:
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except asyncio.TimeoutError:
                raise VoxboxTimeoutError(f"speech did not start within {timeout:.0f} s") from None
        self.pending = None
        return result

    async def prime(self) -> bytes:
        """Run until the first encoded bytes exist (time to first audio)."""
        out = b""
        while not out:
            out, done = await self.step(timeout=max(0.001, self.work.remaining()))
            if done:
                self.completed = True
                break
        return out

    def _record_stages(self) -> None:
        for stage, seconds in self.stream.timings.as_dict().items():
            self.timing.set(stage, seconds)
        self.timing.set("encode", self.encode_seconds)

    async def body(self, first: bytes) -> AsyncIterator[bytes]:
        try:
            if self.sse:
                if first:
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(first).decode()})
            elif first:
                yield first
            while not self.completed:
                if time.monotonic() > self.work.deadline:
                    log.warning("speech stream hit the request timeout; stopping")
                    break
                data, done = await self.step()
                if done:
                    self.completed = True
                if data:
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) if self.sse else data
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

    def finish(self) -> None:
        """Idempotent: stop generation (after any in-flight step) and free the slot."""
        if self.finished:
            return
        self.finished = True
        pending = self.pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _f: self.loop.call_soon_threadsafe(self._finalize))
        else:
            self._finalize()

    def _finalize(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - the engine failed to stop; the slot must still be freed
            log.exception("closing a speech stream failed")
        if not self.completed:
            try:
                self.encoder.abort()
            except Exception:  # noqa: BLE001
                pass
        self.work.release()
        m = self.state.metrics
        label = self.work.label
        if self.audio_seconds > 0:
            m.audio_produced.labels(label).inc(self.audio_seconds)
            m.rtf.labels(label).observe(self.engine_seconds / self.audio_seconds)
        if not self.completed:
            m.cancelled.labels(label).inc()
            log.info("speech stream stopped early after %d chunk(s)", self.chunks)


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
    state.metrics.voice_cache.labels("hit" if where in ("memory", "disk") else "miss").inc()
    state.metrics.voice_cache.labels(where).inc()
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
        stream = await state.run(lambda: engine.stream(text, voice=voice, speed=speed))
        # OpenAI's pcm is 24 kHz 16-bit mono; clients assume that rate.
        out_rate = _PCM_RATE if req.response_format == "pcm" else None
        encoder = StreamEncoder(req.response_format, stream.sample_rate, output_rate=out_rate)
        job = SpeechJob(state, work, stream, encoder, timing, text, req.stream_format == "sse")
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
