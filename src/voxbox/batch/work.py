"""The work of one input, shared by the in-process runner and the Ray actors: decode a file, run the
model through a :class:`~voxbox.runtime.sync.SyncRuntime` holding it, and make the output record.

A failure of one input (undecodable file, text the engine refuses, an engine error) is returned as
a record with ``error`` set; it never raises, so one bad file never stops a job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from voxbox.batch.inputs import AudioItem, SpeakItem
from voxbox.runtime import Catalog, CatalogEntry, RuntimeConfig

__all__ = [
    "ModelJob",
    "SpeakJob",
    "Speaker",
    "TranscribeJob",
    "Transcriber",
    "batch_size_for",
    "decode_file",
    "error_text",
    "verify_record",
]

#: Whisper's input rate; engines that want another say so in their info (resampled in the engine).
ASR_RATE = 16000


@dataclass(frozen=True)
class ModelJob:
    """One model as a batch worker holds it."""

    entry: CatalogEntry
    device: str = "auto"
    threads: int | None = None
    concurrency: int = 1  # inputs one worker runs at once (its batch)


@dataclass(frozen=True)
class TranscribeJob:
    model: ModelJob
    options: dict[str, Any] = field(default_factory=dict)  # the engine's Options fields
    language: str | None = None
    prompt: str | None = None
    task: str = "transcribe"
    word_timestamps: bool = False
    max_seconds: float = 4 * 3600.0
    vad: bool = True  # Silero VAD first, as `voxbox transcribe` does by default


@dataclass(frozen=True)
class SpeakJob:
    model: ModelJob
    options: dict[str, Any] = field(default_factory=dict)
    speed: float | None = None
    fmt: str = "wav"


def batch_size_for(entry: CatalogEntry, on_gpu: bool) -> int:
    """Inputs one worker runs at once: a batchable engine's batch (its scheduler decodes them
    together), else the engine's concurrency."""
    from voxbox.engines.registry import get_spec

    caps = get_spec(entry.engine).capabilities
    if caps.batchable:
        from voxbox.runtime.batching import BatchConfig

        return BatchConfig().max_batch if on_gpu else 4
    return max(1, caps.max_concurrency)


def error_text(exc: BaseException) -> str:
    """One line, as the CLI prints errors."""
    from voxbox.errors import VoxboxError

    if isinstance(exc, VoxboxError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def decode_file(path: str, rate: int = ASR_RATE, max_seconds: float | None = None) -> tuple[Any, float, str | None]:
    """(Audio or None, seconds spent, error or None)."""
    from voxbox.audio.decode import decode

    t0 = time.perf_counter()
    try:
        audio = decode(path, sample_rate=rate, max_duration=max_seconds)
    except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
        return None, time.perf_counter() - t0, error_text(exc)
    return audio, time.perf_counter() - t0, None


class _Worker:
    """A one-model SyncRuntime, loaded at once (a Ray actor is ready when its model is)."""

    def __init__(self, job: ModelJob) -> None:
        from voxbox.runtime.sync import SyncRuntime

        self.job = job
        config = RuntimeConfig(device=job.device, threads=job.threads, ttl=-1, max_loaded=1,
                               queue_size=max(16, 4 * job.concurrency), request_timeout=7 * 24 * 3600.0)
        self.rt = SyncRuntime(Catalog([job.entry]), config).__enter__()
        runtime = self.rt.runtime
        assert runtime is not None
        t0 = time.perf_counter()
        model = self.rt.portal.call(runtime.load, job.entry.name)
        self.load_seconds = time.perf_counter() - t0
        self.info = model.engine.info

    def close(self, interrupted: bool = False) -> None:
        """Unload. ``interrupted``: cancel what is still waiting or running (Ctrl-C) instead of
        waiting for it."""
        if interrupted:
            self.rt.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
        else:
            self.rt.__exit__(None, None, None)


class Transcriber(_Worker):
    def __init__(self, job: TranscribeJob) -> None:
        super().__init__(job.model)
        self.tjob = job

    def __call__(
        self, item: AudioItem, audio: Any = None, decode_s: float = 0.0, error: str | None = None
    ) -> dict[str, Any]:
        """The record of one input; ``audio`` decoded already (Ray decode tasks) or decoded here."""
        t0 = time.perf_counter()
        if audio is None and error is None:
            audio, decode_s, error = decode_file(item.path, self.info.sample_rate or ASR_RATE, self.tjob.max_seconds)
        base = {**item.extra, "path": item.key, "engine": self.info.name, "model": self.job.entry.name}
        if error is not None:
            return {**base, **_EMPTY_ASR, "error": error}
        j = self.tjob
        try:
            with self.rt.acquire(self.job.entry) as work:
                options = work.spec.make_options(j.options)
                if j.vad:
                    from voxbox.runtime.vad import transcribe_speech

                    segments, info = self.rt.call(work, transcribe_speech, work.engine, audio, j.language, j.prompt,
                                                  j.word_timestamps, j.task, options, cancel=work.cancel)
                else:
                    segments, info = self.rt.call(work, work.engine.transcribe, audio, j.language, j.prompt,
                                                  j.word_timestamps, j.task, options, cancel=work.cancel)
                segs = list(self.rt.iterate(work, lambda: segments))
        except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
            return {**base, **_EMPTY_ASR, "duration": round(audio.duration, 3), "error": error_text(exc)}
        from voxbox.formats import transcript_text

        timings = {"decode_audio": decode_s, **info.timings.as_dict(), "total": decode_s + time.perf_counter() - t0}
        return {**base, "text": transcript_text(segs), "segments": [_segment(s, j.word_timestamps) for s in segs],
                "language": info.language, "language_probability": info.language_probability,
                "duration": round(float(info.duration), 3),
                "timings": {k: round(v, 4) for k, v in timings.items()}, "error": None}


_EMPTY_ASR = {"text": None, "segments": None, "language": None, "language_probability": None, "duration": None,
              "timings": None}


def _segment(s: Any, words: bool) -> dict[str, Any]:
    out = {"start": round(float(s.start), 3), "end": round(float(s.end), 3), "text": s.text}
    if words:
        out["words"] = [{"word": w.word, "start": round(float(w.start), 3), "end": round(float(w.end), 3)}
                        for w in (s.words or [])]
    return out


class Speaker(_Worker):
    """Text -> encoded audio bytes and the manifest record (the driver writes both)."""

    def __init__(self, job: SpeakJob) -> None:
        super().__init__(job.model)
        self.sjob = job
        self._voices: dict[tuple[str, str | None], Any] = {}

    def __call__(self, item: SpeakItem) -> tuple[dict[str, Any], bytes | None]:
        from voxbox.audio.encode import encode
        from voxbox.types import Audio

        t0 = time.perf_counter()
        base = {**item.extra, "id": item.id, "text": item.text, "voice": item.voice, "reference": item.reference,
                "engine": self.info.name, "model": self.job.entry.name}
        try:
            with self.rt.acquire(self.job.entry) as work:
                voice = self._voice(work, item)
                options = work.spec.make_options(self.sjob.options)
                stream = self.rt.call(work, work.engine.stream, item.text, voice, self.sjob.speed, options,
                                      cancel=work.cancel)
                chunks = [c.samples for c in self.rt.iterate(work, lambda: stream)]
            import numpy as np

            samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            t1 = time.perf_counter()
            data = encode(Audio(samples, stream.sample_rate), self.sjob.fmt)
            timings = {**stream.timings.as_dict(), "encode_file": time.perf_counter() - t1,
                       "total": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
            return {**base, "file": None, "duration": None, "sample_rate": None, "timings": None,
                    "error": error_text(exc)}, None
        return {**base, "file": f"{item.id}.{self.sjob.fmt}", "duration": round(len(samples) / stream.sample_rate, 3),
                "sample_rate": stream.sample_rate, "timings": {k: round(v, 4) for k, v in timings.items()},
                "error": None}, data

    def _voice(self, work: Any, item: SpeakItem) -> Any:
        if item.reference is None:
            return item.voice
        key = (item.reference, item.reference_text)
        enc = self._voices.get(key)
        if enc is None:
            audio, _, error = decode_file(item.reference, self.info.sample_rate or 24000, 120.0)
            if error is not None:
                from voxbox.errors import BadInputError

                raise BadInputError(f"reference {item.reference}: {error}", param="reference")
            enc = self.rt.call(work, work.engine.encode_voice, audio, item.reference_text)
            self._voices[key] = enc
        return enc


def verify_record(verifier: Transcriber, record: dict[str, Any], data: bytes | None) -> dict[str, Any]:
    """Add the round trip: ``transcript`` (the audio transcribed by ``verifier``) and ``wer``
    against the text (voxbox's one normaliser and WER)."""
    if data is None or record.get("error") is not None:
        return {**record, "transcript": None, "wer": None}
    from voxbox.audio.decode import decode
    from voxbox.text.scoring import wer

    try:
        audio = decode(data, sample_rate=verifier.info.sample_rate or ASR_RATE)
    except Exception as exc:  # noqa: BLE001
        return {**record, "transcript": None, "wer": None, "error": f"verify: {error_text(exc)}"}
    out = verifier(AudioItem(str(record.get("id")), ""), audio)
    if out.get("error") is not None:
        return {**record, "transcript": None, "wer": None, "error": f"verify: {out['error']}"}
    return {**record, "transcript": out["text"], "wer": round(wer(record["text"], out["text"] or ""), 4)}
