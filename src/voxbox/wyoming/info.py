"""What the Wyoming front shares across connections: the runtime, the settings, and ``info``.

``WyomingFront`` adapts the runtime for the handler: ``transcribe`` and ``synthesize`` are async
generators over ``runtime.acquire`` + ``runtime.iterate`` (the same catalog, model manager,
admission and worker threads as ``voxbox serve``), and ``info()`` describes the catalog in
Wyoming's terms (one ASR program with the catalog's ASR models, one TTS program with voices).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice

from voxbox import __version__
from voxbox.audio.vad import VadOptions
from voxbox.engines.registry import get_spec
from voxbox.errors import BadInputError
from voxbox.runtime import CatalogEntry, Runtime
from voxbox.types import Audio

__all__ = ["WyomingFront"]

_ATTRIBUTION = Attribution(name="voxbox", url="https://pypi.org/project/voxbox/")


class WyomingFront:
    def __init__(self, runtime: Runtime, settings: Any) -> None:
        self.runtime = runtime
        self.settings = settings

    # -- describe -------------------------------------------------------------------------------------
    def _unique(self, task: str) -> list[CatalogEntry]:
        """One catalog entry per (engine, weights): aliases would list the same model many times."""
        seen: set[Any] = set()
        out = []
        for e in self.runtime.catalog.entries(task):  # type: ignore[arg-type]
            if e.key not in seen:
                seen.add(e.key)
                out.append(e)
        return out

    def _engine_info(self, entry: CatalogEntry) -> Any:
        loaded = self.runtime.manager.get_loaded(entry.key)
        return loaded.engine.info if loaded is not None else None

    def _languages(self, entry: CatalogEntry) -> list[str]:
        info = self._engine_info(entry)
        if info is not None and info.languages:
            return list(info.languages)
        return list(get_spec(entry.engine).capabilities.languages)

    def _voices(self, entry: CatalogEntry) -> list[str]:
        info = self._engine_info(entry)
        if info is not None:
            return list(info.voices)
        spec = get_spec(entry.engine)
        return list(spec.bundled_voices()) if spec.bundled_voices is not None else []

    def _default_tts(self) -> CatalogEntry | None:
        return self.runtime.catalog.get(self.settings.models.tts)

    def info(self) -> Info:
        asr_models = [AsrModel(name=e.name, attribution=_ATTRIBUTION, installed=True, version=None,
                               description=f"{e.engine} ({e.model or 'default weights'})",
                               languages=self._languages(e)) for e in self._unique("asr")]
        default = self._default_tts()
        voices: list[TtsVoice] = []
        for e in self._unique("tts"):
            is_default = default is not None and e.key == default.key
            names = self._voices(e)
            langs = self._languages(e)
            if not is_default:
                voices.append(TtsVoice(name=e.name, attribution=_ATTRIBUTION, installed=True, version=None,
                                       description=f"{e.name}: default voice", languages=langs))
            for v in names:
                voices.append(TtsVoice(name=v if is_default else f"{e.name}/{v}", attribution=_ATTRIBUTION,
                                       installed=True, version=None, description=f"{e.name}: {v}", languages=langs))
        return Info(
            asr=[AsrProgram(name="voxbox", attribution=_ATTRIBUTION, installed=True, version=__version__,
                            description="voxbox speech-to-text", models=asr_models,
                            supports_transcript_streaming=True)],
            tts=[TtsProgram(name="voxbox", attribution=_ATTRIBUTION, installed=True, version=__version__,
                            description="voxbox text-to-speech", voices=voices,
                            supports_synthesize_streaming=True)],
        )

    # -- ASR ------------------------------------------------------------------------------------------
    async def transcribe(self, audio: Audio, model: str | None,
                         language: str | None) -> AsyncIterator[tuple[str, str | None]]:
        """(segment text, detected language) as segments are decoded."""
        from voxbox.runtime.vad import transcribe_speech

        rt = self.runtime
        vad = self._vad_options() if self.settings.asr.vad else None
        async with rt.acquire(model or self.settings.models.asr, "asr") as work:
            def start() -> Any:
                options = work.spec.make_options({})
                if vad is not None:
                    return transcribe_speech(work.engine, audio, language, None, False, "transcribe", options,
                                             cancel=work.cancel, vad=vad)
                return work.engine.transcribe(audio, language, None, False, "transcribe", options, cancel=work.cancel)

            segments, info = await rt.call(work, start)
            items = rt.iterate(work, lambda: segments)
            try:
                async for seg in items:
                    yield seg.text, info.language
            finally:
                await items.aclose()

    async def partial(self, audio: np.ndarray, model: str | None, language: str | None) -> str:
        """A greedy decode of 16 kHz ``audio`` (the utterance so far), for partial transcripts."""
        from voxbox.audio.vad import speech_chunks
        from voxbox.realtime.session import live_options, transcribe_text

        cut = await self.runtime.run(speech_chunks, Audio(audio, 16000), self._vad_options())
        if cut.empty:
            return ""  # nothing said yet: Whisper would "hear" something in the silence
        rt = self.runtime
        async with rt.acquire(model or self.settings.models.asr, "asr") as work:
            return await rt.call(work, transcribe_text, work, cut.audio.samples, language, None,
                                 live_options(work, 1))

    def _vad_options(self) -> VadOptions:
        a = self.settings.asr
        return VadOptions(threshold=a.vad_threshold, min_silence_ms=a.vad_min_silence_ms,
                          speech_pad_ms=a.vad_speech_pad_ms)

    # -- TTS ------------------------------------------------------------------------------------------
    def _split_voice(self, voice: str | None) -> tuple[str, str | None]:
        """(catalog model, voice or None) for a Wyoming voice name."""
        if not voice:
            return self.settings.models.tts, None
        if voice in self.runtime.catalog and self.runtime.catalog.resolve(voice).task == "tts":
            return voice, None
        if "/" in voice:
            model, _, name = voice.partition("/")
            return model, name or None
        return self.settings.models.tts, voice

    def tts_rate(self, voice: str | None) -> int:
        model, _ = self._split_voice(voice)
        entry = self.runtime.catalog.get(model)
        info = self._engine_info(entry) if entry is not None else None
        return int(info.sample_rate) if info is not None and info.sample_rate else 22050

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[tuple[int, np.ndarray]]:
        """(sample rate, float samples) per engine chunk."""
        from voxbox.audio.decode import decode
        from voxbox.engines.base import validate_text

        rt = self.runtime
        model, name = self._split_voice(voice)
        text = validate_text(text, self.settings.max_speech_chars)
        max_clip = self.settings.voices.max_clip_seconds
        async with rt.acquire(model, "tts") as work:
            resolved: Any = None
            if name is not None:
                resolved, _ = await rt.voice_for(work, name, lambda clip: decode(clip, max_duration=max_clip))
            stream = await rt.call(work, work.engine.stream, text, resolved, None, None, cancel=work.cancel)
            items = rt.iterate(work, lambda: stream)
            try:
                async for chunk in items:
                    yield stream.sample_rate, chunk.samples
            finally:
                await items.aclose()


def check_uri(uri: str) -> str:
    """``tcp://HOST:PORT``, ``unix:///path`` or ``stdio://``; a BadInputError naming the flag otherwise."""
    if not (uri.startswith(("tcp://", "unix://")) or uri == "stdio://"):
        raise BadInputError(f"--uri must be tcp://HOST:PORT, unix://PATH or stdio://, got {uri[:80]!r}", param="uri")
    if uri.startswith("tcp://"):
        host, _, port = uri[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadInputError(f"--uri {uri[:80]!r} needs a host and a port (tcp://127.0.0.1:10300)", param="uri")
    return uri
