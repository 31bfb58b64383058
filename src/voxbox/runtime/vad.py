"""Voice activity detection in front of any ASR engine, in one place above the engines.

``transcribe_speech`` cuts the input to its speech (``voxbox.audio.vad.speech_chunks``), has the
engine transcribe only that, and maps every segment and word time back to the original timeline.
Silence gives no segments at all (Whisper would otherwise "hear" ``You`` or ``Thank you.`` in it),
and music-only stretches are mostly skipped. The engine sees a shorter clip and nothing else: no
engine code changes, and an engine's own VAD option (faster-whisper's ``vad_filter``) still works.

::

    segments, info = transcribe_speech(engine, audio, "en", None, False, "transcribe", options,
                                       cancel=work.cancel)     # as engine.transcribe, VAD first
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from voxbox.audio.vad import SpeechChunks, VadOptions, speech_chunks
from voxbox.types import Audio, CancelToken, Segment, TranscriptionInfo, Word

__all__ = ["map_segment", "transcribe_speech"]


def map_segment(seg: Segment, cut: SpeechChunks) -> Segment:
    """``seg`` with its times (and its words' times) in the original timeline."""
    words = None
    if seg.words is not None:
        words = [Word(start=cut.to_original(w.start), end=cut.to_original(w.end, end=True), word=w.word,
                      probability=w.probability) for w in seg.words]
    start = cut.to_original(seg.start)
    return dataclasses.replace(seg, start=start, end=max(start, cut.to_original(seg.end, end=True)), words=words)


def transcribe_speech(engine: Any, audio: Audio, language: str | None, prompt: str | None,
                      word_timestamps: bool, task: str, options: Any = None, *,
                      cancel: CancelToken | None = None, vad: VadOptions | None = None,
                      ) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """``engine.transcribe`` on the speech of ``audio`` only; same return shape, original times.

    ``info.duration`` is the original duration; ``info.timings`` gains a ``vad`` stage and
    ``info.options["vad"]`` the speech seconds kept. With no speech the engine is not called.
    """
    t0 = time.perf_counter()
    cut = speech_chunks(audio, vad)
    vad_seconds = time.perf_counter() - t0
    if cancel is not None:
        cancel.check()
    kept = {"speech_seconds": round(cut.audio.duration, 3), "regions": len(cut.spans)}
    if cut.empty:
        info = TranscriptionInfo(language=language, language_probability=None, duration=audio.duration,
                                 task="translate" if task == "translate" else "transcribe", options={"vad": kept})
        info.timings.add("vad", vad_seconds)
        return iter(()), info
    segments, inner = engine.transcribe(cut.audio, language, prompt, word_timestamps, task, options, cancel=cancel)
    inner.timings.add("vad", vad_seconds)
    info = dataclasses.replace(inner, duration=audio.duration, options={**(inner.options or {}), "vad": kept})
    return (map_segment(s, cut) for s in segments), info
