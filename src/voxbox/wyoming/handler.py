"""The Wyoming event handler: ``describe`` → ``info``, ASR and TTS on the shared runtime.

* ``transcribe`` (optional: model ``name``, ``language``), then ``audio-start`` / ``audio-chunk``* /
  ``audio-stop`` → ``transcript-start``, ``transcript-chunk``s, the final ``transcript`` (all that
  clients without streaming read) and ``transcript-stop``. While audio arrives, the
  utterance so far is re-decoded every ``realtime.partial_interval_ms`` and words two decodes
  agree on are sent as chunks at once; after ``audio-stop`` the final decode (VAD first, as for
  files) adds the rest segment by segment. Audio in any rate/width/channels becomes 16 kHz mono.
* ``synthesize`` → ``audio-start`` / ``audio-chunk``* / ``audio-stop`` (16-bit mono at the engine's
  rate), streamed chunk by chunk. Streaming text: ``synthesize-start`` / ``synthesize-chunk``* /
  ``synthesize-stop`` → audio per complete sentence as the text arrives, then ``audio-stop`` and
  ``synthesize-stopped`` (the plain ``synthesize`` a streaming client also sends is ignored).
* Voices: the default speech model's voices by name (``heart``), other models' as
  ``MODEL/VOICE`` (``tts-1-hd/joe``), or ``MODEL`` alone for that model's default voice.

Errors become Wyoming ``error`` events (one line, no internals); the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from wyoming.asr import (
    Transcribe,
    Transcript,
    TranscriptChunk,
    TranscriptStart,
    TranscriptStop,
)
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from voxbox.audio.encode import to_s16le
from voxbox.errors import BadInputError, VoxboxError
from voxbox.realtime.agreement import Agreement
from voxbox.wyoming.info import WyomingFront

__all__ = ["VoxboxHandler"]

log = logging.getLogger("voxbox.wyoming")

_ASR_RATE = 16000
_CHUNK_SAMPLES = 2048  # audio-chunk size sent to clients (samples)
_MIN_PARTIAL_S = 1.0  # no partial decode of less audio than this


def _pcm_to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    if width == 2:
        x = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise BadInputError(f"audio width {width} is not supported (1, 2 or 4 bytes)", param="width")
    if channels > 1:
        x = x[: x.size // channels * channels].reshape(-1, channels).mean(axis=1)
    return x


class VoxboxHandler(AsyncEventHandler):
    def __init__(self, front: WyomingFront, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.front = front
        self.asr_model: str | None = None
        self.language: str | None = None
        self._audio: list[np.ndarray] = []
        self._format: tuple[int, int, int] | None = None  # rate, width, channels
        self._streaming_tts: dict[str, Any] | None = None
        self._agreement = Agreement()
        self._transcript_started = False
        self._partial_task: asyncio.Task[None] | None = None
        self._next_partial = 0.0

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except VoxboxError as exc:
            await self.write_event(Error(text=str(exc), code=type(exc).__name__).event())
        except Exception:
            log.exception("wyoming: %s failed", event.type)
            await self.write_event(Error(text=f"{event.type} failed (see the server log)", code="server_error").event())
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.front.info().event())
        elif Transcribe.is_type(event.type):
            t = Transcribe.from_event(event)
            self.asr_model, self.language = t.name, t.language
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._format, self._audio = (start.rate, start.width, start.channels), []
            self._agreement, self._transcript_started = Agreement(), False
        elif AudioChunk.is_type(event.type):
            c = AudioChunk.from_event(event)
            if self._format is None:  # a chunk without audio-start: take its format
                self._format = (c.rate, c.width, c.channels)
            self._audio.append(_pcm_to_float(c.audio, c.width, c.channels))
            self._maybe_partial()
        elif AudioStop.is_type(event.type):
            await self._transcribe()
        elif SynthesizeStart.is_type(event.type):
            begin = SynthesizeStart.from_event(event)
            self._streaming_tts = {"voice": begin.voice.name if begin.voice else None, "text": "", "started": False}
        elif SynthesizeChunk.is_type(event.type):
            await self._synthesize_chunk(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self._synthesize_stop()
        elif Synthesize.is_type(event.type) and self._streaming_tts is None:
            # (streaming clients send a plain synthesize too, for old servers: ignored while streaming)
            text = Synthesize.from_event(event)
            await self._speak(text.text, text.voice.name if text.voice else None, start=True, stop=True)

    # -- ASR ------------------------------------------------------------------------------------------
    def _samples(self) -> np.ndarray:
        """The utterance so far at 16 kHz."""
        from voxbox.audio.resample import resample

        assert self._format is not None
        rate = self._format[0]
        samples = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        return resample(samples, rate, _ASR_RATE) if rate != _ASR_RATE else samples

    async def _chunk(self, text: str) -> None:
        if not self._transcript_started:
            self._transcript_started = True
            await self.write_event(TranscriptStart(language=self.language).event())
        if text:
            await self.write_event(TranscriptChunk(text=text).event())

    def _maybe_partial(self) -> None:
        interval = self.front.settings.realtime.partial_interval_ms / 1000.0
        if interval <= 0 or self._format is None or (self._partial_task and not self._partial_task.done()):
            return
        loop = asyncio.get_running_loop()
        heard = sum(x.size for x in self._audio) / self._format[0]
        if heard < _MIN_PARTIAL_S or loop.time() < self._next_partial:
            return
        self._partial_task = loop.create_task(self._partial(self._samples()))

    async def _partial(self, audio: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            text = await self.front.partial(audio, self.asr_model, self.language)
        except VoxboxError:
            return  # best effort: the final transcript reports errors
        # the next one after the interval, or after as long as this one took on a busy machine
        self._next_partial = loop.time() + max(self.front.settings.realtime.partial_interval_ms / 1000.0,
                                               loop.time() - t0)
        await self._chunk(self._agreement.update(text))

    async def _transcribe(self) -> None:
        from voxbox.types import Audio

        if self._format is None:
            raise BadInputError("audio-stop without audio-start", param="audio")
        if self._partial_task is not None and not self._partial_task.done():
            self._partial_task.cancel()  # the final decode supersedes it
            with contextlib.suppress(BaseException):
                await self._partial_task
        audio = Audio(self._samples(), _ASR_RATE)
        self._audio, self._format = [], None
        if audio.duration > self.front.settings.max_audio_seconds:
            raise BadInputError("the audio is longer than the server accepts", param="audio")
        await self._chunk("")
        text = ""
        language = self.language
        if audio.duration > 0:
            async for part, lang in self.front.transcribe(audio, self.asr_model, self.language):
                language = language or lang
                text += part
                await self._chunk(self._agreement.final(text))
        # the final transcript first (what non-streaming clients wait for), then the end of the stream
        await self.write_event(Transcript(text=text.strip(), language=language).event())
        await self.write_event(TranscriptStop().event())

    # -- TTS ------------------------------------------------------------------------------------------
    async def _speak(self, text: str, voice: str | None, *, start: bool, stop: bool) -> bool:
        """Synthesize ``text``; audio-start first when ``start``; audio-stop last when ``stop``.
        True if audio-start was sent."""
        sent_start = False
        if text.strip():
            async for rate, samples in self.front.synthesize(text, voice):
                if start and not sent_start:
                    await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
                    sent_start = True
                pcm = to_s16le(samples)
                for i in range(0, len(pcm), _CHUNK_SAMPLES * 2):
                    await self.write_event(AudioChunk(rate=rate, width=2, channels=1,
                                                      audio=pcm[i : i + _CHUNK_SAMPLES * 2]).event())
        if stop:
            if start and not sent_start:  # nothing to say: still a well-formed (empty) stream
                await self.write_event(AudioStart(rate=self.front.tts_rate(voice), width=2, channels=1).event())
                sent_start = True
            await self.write_event(AudioStop().event())
        return sent_start

    async def _synthesize_chunk(self, text: str) -> None:
        from voxbox.text import split_sentences

        st = self._streaming_tts
        if st is None:
            raise BadInputError("synthesize-chunk without synthesize-start", param="text")
        st["text"] += text
        sentences = split_sentences(st["text"])
        if len(sentences) < 2:
            return
        done, st["text"] = " ".join(sentences[:-1]), sentences[-1]
        if await self._speak(done, st["voice"], start=not st["started"], stop=False):
            st["started"] = True

    async def _synthesize_stop(self) -> None:
        st, self._streaming_tts = self._streaming_tts, None
        if st is None:
            raise BadInputError("synthesize-stop without synthesize-start", param="text")
        await self._speak(st["text"], st["voice"], start=not st["started"], stop=True)
        await self.write_event(SynthesizeStopped().event())
