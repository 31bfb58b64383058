"""One Realtime transcription session: audio in, VAD turns, partial and final transcripts out.

State machine (server VAD)::

    idle ──speech start──▶ speaking ──pause ≥ silence_duration_ms──▶ committed ──▶ final decode
      ▲                      │ every partial_interval_ms: re-decode the growing turn → deltas │
      └──────────────────────┴──────────────── (turn over) ◀─────────────────────────────────┘

With ``turn_detection: null`` the client commits (``input_audio_buffer.commit``). Every decode is
``runtime.acquire(model, "asr")`` + ``runtime.call``: sessions share loaded models, admission
and worker threads with every other front. Partial results are greedy re-decodes of the turn so
far; a word is sent as a ``delta`` once two consecutive hypotheses agree on it (text already
sent cannot be taken back). When the user pauses, the turn up to the pause is decoded at once,
so when the pause turns out to be the end of the turn, its final transcript is often ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxbox.audio.resample import StreamResampler
from voxbox.audio.vad import VAD_RATE, VadStream
from voxbox.errors import CapacityError, VoxboxError
from voxbox.realtime.agreement import Agreement
from voxbox.realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_update,
    decode_audio,
    error_event,
    new_id,
    session_object,
)
from voxbox.types import Audio

__all__ = ["LiveSettings", "TranscriptionSession", "live_options", "transcribe_text"]

log = logging.getLogger("voxbox.realtime")

Send = Callable[[dict[str, Any]], Awaitable[None]]
_TRAIL_MS = 100  # audio kept after the end of speech (word tails)
_MIN_COMMIT_MS = 100  # OpenAI refuses commits of less than 100 ms
_MIN_PARTIAL_MS = 1000  # no partial re-decode of a turn shorter than this (too little to agree on)


@dataclass(frozen=True)
class LiveSettings:
    """The server's realtime settings, as the session needs them."""

    partial_interval_ms: int = 500
    max_turn_seconds: float = 30.0
    beam_size: int | None = 1


@dataclass
class _Turn:
    item_id: str
    start: int  # absolute 16 kHz sample
    agreement: Agreement = field(default_factory=Agreement)  # words sent as deltas so far
    decoded_end: int = -1
    done: bool = False  # the final transcript was sent
    spec: tuple[int, asyncio.Future[str]] | None = None  # (end sample, decode of start..end)


def _ms(samples: int) -> int:
    return samples * 1000 // VAD_RATE


def live_options(work: Any, beam_size: int | None) -> Any:
    """Per-call options for live decodes of short utterances: no timestamps, no conditioning on
    earlier windows, ``beam_size`` (1 = greedy) — whichever of these the engine has."""
    fields = {f.name for f in dataclasses.fields(work.spec.options)}
    wanted: dict[str, Any] = {"without_timestamps": True, "condition_on_previous_text": False}
    if beam_size is not None:
        wanted["beam_size"] = beam_size
    return work.spec.make_options({k: v for k, v in wanted.items() if k in fields})


def transcribe_text(work: Any, audio: np.ndarray, language: str | None, prompt: str | None, options: Any) -> str:
    """The text of 16 kHz ``audio`` (blocking; run it with ``runtime.call``)."""
    segments, _info = work.engine.transcribe(Audio(audio, VAD_RATE), language, prompt, False, "transcribe", options,
                                             cancel=work.cancel)
    return "".join(s.text for s in segments).strip()


class TranscriptionSession:
    def __init__(self, runtime: Any, send: Send, *, model: str, settings: LiveSettings | None = None) -> None:
        self.runtime = runtime
        self._send = send
        self.settings = settings or LiveSettings()
        self.id = new_id("sess")
        self.cfg = SessionConfig(model=model)
        self.beta = False
        self._resampler = StreamResampler(self.cfg.rate, VAD_RATE)
        self.audio = np.zeros(0, np.float32)  # 16 kHz, from absolute sample ``base``
        self.base = 0
        self.total = 0
        self._vad_origin = 0
        self.vad: VadStream | None = self._new_vad()
        self.committed = 0  # absolute sample where uncommitted audio begins
        self.turn: _Turn | None = None
        self.last_item: str | None = None
        self._finals: asyncio.Queue[tuple[_Turn, int, np.ndarray] | None] = asyncio.Queue()
        self._finals_busy = 0
        self._wake = asyncio.Event()
        self._cooldown_until = 0.0  # no regular partial decode before this (event-loop time)
        self._tasks: list[asyncio.Task[Any]] = []
        #: decodes by kind, logged when the session ends
        self.stats = {"partial_decodes": 0, "speculative_decodes": 0, "speculative_hits": 0, "final_decodes": 0}

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.runtime.catalog.resolve(self.cfg.model, "asr")
        self._tasks = [asyncio.create_task(self._final_worker()), asyncio.create_task(self._partial_loop())]
        await self.emit("session.created", session=session_object(self.cfg, self.id, beta=False))

    async def close(self) -> None:
        log.info("realtime session %s ended: %s", self.id, ", ".join(f"{k} {v}" for k, v in self.stats.items()))
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    async def emit(self, kind: str, **fields: Any) -> None:
        await self._send({"type": kind, "event_id": new_id("event"), **fields})

    # -- client events ------------------------------------------------------------------------------
    async def handle(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ProtocolError("each message must be a JSON object with a 'type'", code="invalid_event", param="type")
        kind = event["type"]
        if kind in ("session.update", "transcription_session.update"):
            await self._update(event)
        elif kind == "input_audio_buffer.append":
            await self._after_append(self._append(decode_audio(event.get("audio"), self.cfg.input_format)))
        elif kind == "input_audio_buffer.commit":
            await self._manual_commit()
        elif kind == "input_audio_buffer.clear":
            self._clear()
            await self.emit("input_audio_buffer.cleared")
        else:
            raise ProtocolError(f"event type {kind[:80]!r} is not supported in a transcription session",
                                code="unknown_event", param="type")

    async def _update(self, event: dict[str, Any]) -> None:
        cfg = apply_update(self.cfg, event)
        if cfg.model != self.cfg.model:
            self.runtime.catalog.resolve(cfg.model, "asr")  # unknown names fail here, not at the first turn
        old, self.cfg = self.cfg, cfg
        self.beta = event["type"] == "transcription_session.update"
        if cfg.input_format != old.input_format:
            self._resampler = StreamResampler(cfg.rate, VAD_RATE)
        if cfg.turn_detection != old.turn_detection:
            self.vad = self._new_vad()
            self.turn = None
        kind = "transcription_session.updated" if self.beta else "session.updated"
        await self.emit(kind, session=session_object(cfg, self.id, beta=self.beta))

    def _new_vad(self) -> VadStream | None:
        """A VAD for the audio from now on; its sample indices count from ``self._vad_origin``."""
        td = self.cfg.turn_detection
        self._vad_origin = self.total
        if td is None:
            return None
        return VadStream(threshold=td.threshold, silence_ms=td.silence_duration_ms, prefix_ms=td.prefix_padding_ms)

    def _append(self, samples: np.ndarray) -> np.ndarray:
        x = self._resampler.push(samples)
        if x.size:
            self.audio = np.concatenate([self.audio, x])
            self.total += x.size
        return x

    def _clear(self) -> None:
        self.committed = self.total
        self.turn = None
        if self.vad is not None:
            self.vad.reset()
        self._trim()

    def _slice(self, start: int, end: int) -> np.ndarray:
        a, b = max(start, self.base) - self.base, max(min(end, self.total), self.base) - self.base
        return self.audio[a:b].copy()

    def _trim(self) -> None:
        """Keep what a turn may still need: the current turn, or the prefix padding before one."""
        td = self.cfg.turn_detection
        if td is None:
            keep_from = self.committed
        elif self.turn is not None:
            keep_from = self.turn.start
        else:
            keep_from = self.total - (td.prefix_padding_ms + 1000) * VAD_RATE // 1000
        keep_from = max(self.base, min(keep_from, self.total))
        if keep_from > self.base:
            self.audio = self.audio[keep_from - self.base:]
            self.base = keep_from

    async def _after_append(self, x: np.ndarray) -> None:
        max_turn = int(self.settings.max_turn_seconds * VAD_RATE)
        if self.vad is None:
            if self.total - self.committed >= max_turn:
                await self._commit(self.committed, self.total)
            self._trim()
            return
        origin = self._vad_origin
        for ev in self.vad.feed(x) if x.size else []:
            if ev.kind == "start" and self.turn is None:
                self.turn = _Turn(new_id("item"), max(origin + ev.sample, self.committed, self.base))
                await self.emit("input_audio_buffer.speech_started", audio_start_ms=_ms(self.turn.start),
                                item_id=self.turn.item_id)
            elif ev.kind == "stop" and self.turn is not None:
                turn, self.turn = self.turn, None
                end = min(self.total, origin + (ev.speech_end or ev.sample) + _TRAIL_MS * VAD_RATE // 1000)
                await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=_ms(origin + ev.sample),
                                item_id=turn.item_id)
                await self._commit(turn.start, end, turn)
        long_turn = self.turn
        if long_turn is not None and self.total - long_turn.start >= max_turn:
            self.turn = None
            await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=_ms(self.total),
                            item_id=long_turn.item_id)
            await self._commit(long_turn.start, self.total, long_turn)
            self.turn = _Turn(new_id("item"), self.total)
            await self.emit("input_audio_buffer.speech_started", audio_start_ms=_ms(self.total),
                            item_id=self.turn.item_id)
        if self.turn is not None and self._pause_end() is not None:
            self._wake.set()  # decode up to the pause now: it may be the end of the turn
        self._trim()

    def _pausing(self) -> bool:
        return self.vad is not None and self.vad.quiet_since is not None

    def _pause_end(self) -> int | None:
        """The end a turn would have if the current pause ends it, once the pause has lasted half
        the silence duration (shorter dips, between words, are not worth a decode)."""
        td = self.cfg.turn_detection
        if self.vad is None or self.vad.quiet_since is None or td is None:
            return None
        quiet = self._vad_origin + self.vad.quiet_since
        waited = max(_TRAIL_MS, td.silence_duration_ms // 2) * VAD_RATE // 1000
        if self.total - quiet < waited:
            return None
        return quiet + _TRAIL_MS * VAD_RATE // 1000

    async def _manual_commit(self) -> None:
        turn, self.turn = self.turn, None
        start = turn.start if turn is not None else max(self.committed, self.base)
        if self.total - start < _MIN_COMMIT_MS * VAD_RATE // 1000:
            raise ProtocolError(f"buffer too small: at least {_MIN_COMMIT_MS} ms of audio must be appended "
                                f"before a commit", code="input_audio_buffer_commit_empty")
        if self.vad is not None:
            self.vad.reset()
        await self._commit(start, self.total, turn)

    async def _commit(self, start: int, end: int, turn: _Turn | None = None) -> None:
        turn = turn or _Turn(new_id("item"), start)
        audio = self._slice(start, end)
        self.committed = max(self.committed, end)
        previous, self.last_item = self.last_item, turn.item_id
        await self.emit("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=previous)
        item = {"id": turn.item_id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
        await self.emit("conversation.item.created" if self.beta else "conversation.item.added",
                        previous_item_id=previous, item=item)
        self._finals_busy += 1
        self._finals.put_nowait((turn, end, audio))

    # -- decoding -----------------------------------------------------------------------------------
    async def _decode(self, audio: np.ndarray, *, final: bool) -> str:
        rt = self.runtime
        cfg = self.cfg
        async with rt.acquire(cfg.model, "asr") as work:
            options = live_options(work, self.settings.beam_size if final else 1)
            return await rt.call(work, transcribe_text, work, audio, cfg.language, cfg.prompt, options)  # type: ignore[no-any-return]

    async def _final_worker(self) -> None:
        while True:
            job = await self._finals.get()
            if job is None:
                return
            turn, end, audio = job
            try:
                await self._final(turn, end, audio)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, VoxboxError):
                    log.exception("realtime: transcribing item %s failed", turn.item_id)
                err = error_event(exc)["error"]
                await self.emit("conversation.item.input_audio_transcription.failed", item_id=turn.item_id,
                                content_index=0, error=err)
            finally:
                self._finals_busy -= 1

    async def _final(self, turn: _Turn, end: int, audio: np.ndarray) -> None:
        text = None
        spec = turn.spec
        if spec is not None and spec[0] == end:
            with contextlib.suppress(CapacityError):  # the speculative decode was refused: decode now
                text = await spec[1]  # decoded when the pause began
                self.stats["speculative_hits"] += 1
        if text is None:
            self.stats["final_decodes"] += 1
            text = await self._decode(audio, final=True)
        turn.done = True
        rest = turn.agreement.final(text)
        if rest:
            await self.emit("conversation.item.input_audio_transcription.delta", item_id=turn.item_id,
                            content_index=0, delta=rest)
        await self.emit("conversation.item.input_audio_transcription.completed", item_id=turn.item_id,
                        content_index=0, transcript=text,
                        usage={"type": "duration", "seconds": round(audio.size / VAD_RATE, 3)})

    async def _partial_loop(self) -> None:
        interval = self.settings.partial_interval_ms / 1000.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval if interval > 0 else None)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            turn = self.turn
            if turn is None or self._finals_busy:
                continue
            pause_end = self._pause_end()
            if pause_end is None and (interval <= 0 or self._pausing()):
                continue  # no regular partial during a pause: keep the model free for the speculative final
            loop = asyncio.get_running_loop()
            if pause_end is None and loop.time() < self._cooldown_until:
                continue  # decodes take longer than the interval (a slow or busy machine): space them out
            end = pause_end if pause_end is not None else self.total
            shortest = (300 if pause_end is not None else _MIN_PARTIAL_MS) * VAD_RATE // 1000
            if end <= turn.decoded_end or end - turn.start < shortest:
                continue
            turn.decoded_end = end
            self.stats["speculative_decodes" if pause_end is not None else "partial_decodes"] += 1
            t0 = loop.time()
            audio = self._slice(turn.start, end)
            fut: asyncio.Future[str] = asyncio.ensure_future(self._decode(audio, final=pause_end is not None))
            if pause_end is not None:
                turn.spec = (end, fut)
            try:
                text = await asyncio.shield(fut)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except CapacityError:
                continue  # the model is busy: skip this partial
            except Exception:
                log.debug("realtime: partial decode failed", exc_info=True)
                continue
            self._cooldown_until = loop.time() + (loop.time() - t0)
            await self._partial(turn, text)

    async def _partial(self, turn: _Turn, text: str) -> None:
        if turn.done:
            return
        delta = turn.agreement.update(text)
        if delta:
            await self.emit("conversation.item.input_audio_transcription.delta", item_id=turn.item_id,
                            content_index=0, delta=delta)

    # -- for the route ------------------------------------------------------------------------------
    async def report(self, exc: BaseException, event: Any) -> None:
        event_id = event.get("event_id") if isinstance(event, dict) else None
        await self._send(error_event(exc, event_id=event_id if isinstance(event_id, str) else None))
