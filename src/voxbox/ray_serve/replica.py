"""The model side of the seam: one Ray Serve replica holding a :class:`~voxbox.runtime.Runtime` with
one catalog model, loaded when the replica starts.

The ingress's :class:`~voxbox.ray_serve.remote.RemoteEngine` calls these methods through a
``DeploymentHandle``. Work runs exactly as in the plain server: ``acquire`` (admission, deadline,
cancel token), the engine call in the runtime's worker threads, results streamed back as they
come. A streamed call yields a header first (after the engine validated the call), then its items,
then a trailer with the final stage timings::

    speak(...)      -> ("start", sample_rate, details), ("chunk", AudioChunk)..., ("end", timings, details)
    transcribe(...) -> ("info", TranscriptionInfo fields), ("segment", Segment)..., ("end", timings)

When the caller goes away, Serve cancels the generator: leaving ``acquire`` cancels the work's
token, the engine stops at its next check and the slot is freed.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from voxbox.engines.base import EncodedVoice
from voxbox.runtime import Catalog, CatalogEntry, Runtime, RuntimeConfig, Work
from voxbox.types import Audio, EngineInfo

__all__ = ["ModelReplica", "RemoteClip"]

log = logging.getLogger("voxbox.ray")

#: Engine encodings of uploaded reference clips kept per replica.
VOICE_CACHE = 32


class RemoteClip:
    """An uploaded reference clip as the ingress keeps it: the replica that speaks with it encodes
    it on its own device (and caches the encoding), so no device tensor crosses the network."""

    __slots__ = ("sample_rate", "samples", "sha256", "transcript")

    def __init__(self, audio: Audio, transcript: str | None) -> None:
        self.samples = audio.samples
        self.sample_rate = audio.sample_rate
        self.transcript = transcript
        self.sha256 = hashlib.sha256(audio.samples.tobytes()).hexdigest()

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.samples, self.sample_rate, self.transcript, self.sha256)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.samples, self.sample_rate, self.transcript, self.sha256 = state


class ModelReplica:
    """Deployed by :mod:`voxbox.ray_serve.app` as ``serve.deployment(ModelReplica)``; ``__init__`` is
    async so Serve routes nothing to the replica before its model is loaded."""

    async def __init__(self, entry: CatalogEntry, config: RuntimeConfig) -> None:  # type: ignore[misc]
        self.entry = entry
        self.runtime = Runtime(Catalog([entry]), config)
        self.runtime.start()
        t0 = time.perf_counter()
        model = await self.runtime.load(entry.name)
        self.engine = model.engine
        self._voices: collections.OrderedDict[str, EncodedVoice] = collections.OrderedDict()
        log.info("replica of %s ready: %s on %s in %.1f s", entry.name, self.engine.info.name,
                 self.engine.info.device, time.perf_counter() - t0)

    async def engine_info(self) -> EngineInfo:
        return self.engine.info  # type: ignore[no-any-return]

    async def check_health(self) -> None:
        """Serve's health check: the model is loaded and the runtime takes work."""
        if self.runtime.draining or self.runtime.loaded(self.entry.name) is None:
            raise RuntimeError(f"model {self.entry.name} is not loaded")

    # -- speech -----------------------------------------------------------------------------------
    async def speak(self, text: str, voice: Any, speed: float | None, options: Any,
                    timeout: float | None = None) -> AsyncIterator[tuple[Any, ...]]:
        rt = self.runtime
        async with rt.acquire(self.entry, "tts", timeout=timeout) as work:
            if isinstance(voice, EncodedVoice) and isinstance(voice.data, RemoteClip):
                voice = await self._voice(work, voice.data)
            stream = await rt.call(work, work.engine.stream, text, voice, speed, options, cancel=work.cancel)
            yield ("start", stream.sample_rate, dict(stream.details))
            items = rt.iterate(work, lambda: stream)
            try:
                while True:
                    try:
                        chunk = await items.next(timeout=work.remaining())
                    except StopAsyncIteration:
                        break
                    yield ("chunk", chunk)
            finally:
                await items.aclose()
            yield ("end", stream.timings.as_dict(), dict(stream.details))

    async def encode_voice(self, audio: Audio, transcript: str | None) -> EncodedVoice:
        """What the ingress caches for an uploaded voice: the clip (checked by the engine now, so a
        model that cannot clone answers here), encoded where it is used."""
        clip = RemoteClip(audio, transcript)
        async with self.runtime.acquire(self.entry, "tts") as work:
            await self._voice(work, clip)
        key = (self.engine.info.name, str(self.engine.info.model), clip.sha256)
        return EncodedVoice(key, clip, transcript, nbytes=int(clip.samples.nbytes))

    async def _voice(self, work: Work, clip: RemoteClip) -> EncodedVoice:
        cached = self._voices.get(clip.sha256)
        if cached is not None:
            self._voices.move_to_end(clip.sha256)
            return cached
        audio = Audio(clip.samples, clip.sample_rate)
        enc: EncodedVoice = await self.runtime.call(work, work.engine.encode_voice, audio, clip.transcript)
        self._voices[clip.sha256] = enc
        while len(self._voices) > VOICE_CACHE:
            self._voices.popitem(last=False)
        return enc

    # -- transcription ------------------------------------------------------------------------------
    async def transcribe(self, audio: Any, language: str | None, prompt: str | None, word_timestamps: bool,
                         task: str, options: Any, timeout: float | None = None) -> AsyncIterator[tuple[Any, ...]]:
        rt = self.runtime
        async with rt.acquire(self.entry, "asr", timeout=timeout) as work:
            engine = work.engine
            segments, info = await rt.call(work, engine.transcribe, audio, language, prompt, word_timestamps,
                                           task, options, cancel=work.cancel)
            yield ("info", {"language": info.language, "language_probability": info.language_probability,
                            "duration": info.duration, "task": info.task, "options": dict(info.options)},
                   info.timings.as_dict())
            items = rt.iterate(work, lambda: segments)
            try:
                while True:
                    try:
                        seg = await items.next(timeout=work.remaining())
                    except StopAsyncIteration:
                        break
                    yield ("segment", seg)
            finally:
                await items.aclose()
            yield ("end", info.timings.as_dict())

    async def __del__(self) -> None:
        try:
            await self.runtime.close()
        except Exception as exc:  # noqa: BLE001 - the replica is going away either way
            log.debug("closing the runtime of %s: %s", self.entry.name, exc)
