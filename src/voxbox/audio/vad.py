"""Voice activity detection: Silero VAD (v6) on ONNX Runtime, for files and for live streams.

The model is the ``silero_vad_v6.onnx`` that faster-whisper (a core dependency) ships in its
wheel, verified by SHA-256 (``voxbox.models.bundled``, bundle ``silero-vad``) before it is loaded.
It scores 32 ms frames (512 samples at 16 kHz, each with the 64 samples before it as context)
and carries an LSTM state from frame to frame, so a whole file is scored in one batched call and
a live stream frame by frame with the same numbers.

::

    spans = speech_timestamps(audio)                   # [SpeechSpan(start=0.42, end=3.1), ...] seconds
    cut = speech_chunks(audio)                         # speech only, concatenated, + the way back
    cut.audio; cut.to_original(1.5)                    # a time in the cut -> the original timeline

    stream = VadStream(threshold=0.5, silence_ms=500, prefix_ms=300)
    for event in stream.feed(samples_16k): ...        # VadEvent("start"/"stop", sample index)

Heavy imports (onnxruntime) happen when the model is first loaded; importing this module is cheap.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voxbox.errors import BadInputError
from voxbox.types import Audio

__all__ = [
    "FRAME",
    "VAD_RATE",
    "SileroVad",
    "SpeechChunks",
    "SpeechSpan",
    "VadEvent",
    "VadOptions",
    "VadStream",
    "load_vad",
    "speech_chunks",
    "speech_probabilities",
    "speech_timestamps",
]

#: The model's sample rate and frame: 512 samples (32 ms) scored with the 64 samples before them.
VAD_RATE = 16000
FRAME = 512
CONTEXT = 64
_STATE = (1, 1, 128)
_BATCH = 8192  # frames per ONNX call for whole files (bounds memory for hour-long inputs)


@dataclass(frozen=True)
class VadOptions:
    """How probabilities become speech regions (defaults tuned for file transcription)."""

    #: A frame with a speech probability at or above this starts (or continues) speech.
    threshold: float = 0.5
    #: Below this a frame counts as silence; default ``threshold - 0.15`` (hysteresis).
    neg_threshold: float | None = None
    #: Speech shorter than this is dropped (clicks, coughs).
    min_speech_ms: int = 250
    #: Silence must last this long to end a region (shorter pauses stay inside it).
    min_silence_ms: int = 1000
    #: Audio kept on each side of a region, so word onsets and tails are not cut.
    speech_pad_ms: int = 400

    def check(self) -> VadOptions:
        if not 0.0 < self.threshold < 1.0:
            raise BadInputError("VAD threshold must be between 0 and 1", param="threshold")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise BadInputError("VAD neg_threshold must be between 0 and threshold", param="neg_threshold")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            value = getattr(self, name)
            if not 0 <= value <= 60_000:
                raise BadInputError(f"VAD {name} must be between 0 and 60000", param=name)
        return self

    @property
    def low(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechSpan:
    """A speech region in seconds of the original timeline."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class SileroVad:
    """The ONNX session. ``run`` is thread-safe (ONNX Runtime sessions are); state lives with callers."""

    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def initial_state() -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(_STATE, np.float32), np.zeros(_STATE, np.float32)

    def run(self, frames: np.ndarray,
            state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Score ``frames`` ((n, 576): context + frame, in order) from ``state``; (probs (n,), new state)."""
        probs, h, c = self.session.run(None, {"input": frames.astype(np.float32, copy=False),
                                              "h": state[0], "c": state[1]})
        return np.asarray(probs, np.float32).reshape(-1), (h, c)


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load() -> SileroVad:
    from voxbox.models.bundled import silero_vad_path

    return SileroVad(str(silero_vad_path()))


def load_vad() -> SileroVad:
    """The process-wide model, verified and loaded once (about 2 MB, one CPU thread)."""
    with _load_lock:
        return _load()


def _at_16k(audio: Audio) -> np.ndarray:
    if audio.sample_rate == VAD_RATE:
        return audio.samples
    from voxbox.audio.resample import resample

    return resample(audio.samples, audio.sample_rate, VAD_RATE)


def _framed(samples: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """(n, 576) frames with their 64-sample left context; ``samples`` is a multiple of FRAME long."""
    frames = samples.reshape(-1, FRAME)
    ctx = np.empty((frames.shape[0], CONTEXT), np.float32)
    ctx[0] = context if context is not None else 0.0
    ctx[1:] = frames[:-1, -CONTEXT:]
    return np.concatenate([ctx, frames], axis=1)


def speech_probabilities(audio: Audio, model: SileroVad | None = None) -> np.ndarray:
    """Speech probability of every 32 ms frame of ``audio`` (the last frame zero-padded)."""
    model = model or load_vad()
    x = _at_16k(audio)
    if x.size == 0:
        return np.zeros(0, np.float32)
    pad = (-x.size) % FRAME
    frames = _framed(np.pad(x, (0, pad)) if pad else x)
    state = model.initial_state()
    out = []
    for i in range(0, frames.shape[0], _BATCH):
        probs, state = model.run(frames[i : i + _BATCH], state)
        out.append(probs)
    return np.concatenate(out)


def _regions(probs: np.ndarray, opts: VadOptions) -> list[tuple[int, int]]:
    """Frame-index regions [start, end) of speech by hysteresis: start at ``threshold``, end after
    ``min_silence_ms`` below the low threshold (the end is where that silence began)."""
    ms_per_frame = 1000.0 * FRAME / VAD_RATE
    min_silence = max(1, math.ceil(opts.min_silence_ms / ms_per_frame))
    low = opts.low
    regions: list[tuple[int, int]] = []
    start: int | None = None
    quiet_from: int | None = None
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= opts.threshold:
                start, quiet_from = i, None
            continue
        if p >= opts.threshold:
            quiet_from = None
        elif p < low:
            if quiet_from is None:
                quiet_from = i
            if i + 1 - quiet_from >= min_silence:
                regions.append((start, quiet_from))
                start = quiet_from = None
    if start is not None:
        regions.append((start, quiet_from if quiet_from is not None else len(probs)))
    min_speech = opts.min_speech_ms / ms_per_frame
    return [(a, b) for a, b in regions if b - a >= min_speech]


def speech_timestamps(audio: Audio, options: VadOptions | None = None, *,
                      probs: np.ndarray | None = None) -> list[SpeechSpan]:
    """Speech regions of ``audio`` in seconds, padded by ``speech_pad_ms`` and merged where the
    padding makes them touch. Empty for silence (and for music, mostly)."""
    opts = (options or VadOptions()).check()
    probs = speech_probabilities(audio) if probs is None else probs
    frame_s = FRAME / VAD_RATE
    pad = opts.speech_pad_ms / 1000.0
    total = audio.duration
    spans: list[SpeechSpan] = []
    for a, b in _regions(probs, opts):
        start = max(0.0, a * frame_s - pad)
        end = min(total, b * frame_s + pad)
        if spans and start <= spans[-1].end:
            spans[-1] = SpeechSpan(spans[-1].start, max(end, spans[-1].end))
        else:
            spans.append(SpeechSpan(start, end))
    return [SpeechSpan(round(s.start, 3), round(s.end, 3)) for s in spans if s.end > s.start]


@dataclass
class SpeechChunks:
    """Only the speech of an input, concatenated, with the way back to the original timeline."""

    audio: Audio
    spans: list[SpeechSpan]
    original_duration: float
    _offsets: list[float] = field(default_factory=list)  # start of each span inside ``audio``

    def __post_init__(self) -> None:
        t = 0.0
        self._offsets = []
        for s in self.spans:
            self._offsets.append(t)
            t += s.duration

    @property
    def empty(self) -> bool:
        return not self.spans

    def to_original(self, t: float, *, end: bool = False) -> float:
        """A time in the concatenated speech -> the same instant in the original audio. A time on
        a seam belongs to the span it ends (``end=True``) or the one it starts."""
        if not self.spans:
            return t
        k = (bisect.bisect_left if end else bisect.bisect_right)(self._offsets, t) - 1
        k = min(max(k, 0), len(self.spans) - 1)
        span = self.spans[k]
        return round(min(span.start + max(0.0, t - self._offsets[k]), span.end), 3)


def speech_chunks(audio: Audio, options: VadOptions | None = None) -> SpeechChunks:
    """Cut ``audio`` to its speech (at its own sample rate) for an ASR engine."""
    spans = speech_timestamps(audio, options)
    rate = audio.sample_rate
    parts = [audio.samples[round(s.start * rate) : round(s.end * rate)] for s in spans]
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return SpeechChunks(Audio(samples, rate), spans, audio.duration)


# ------------------------------------------------------------------------------------------------
# live streams
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VadEvent:
    """``start``: speech began at ``sample`` (prefix padding already subtracted, never < 0).
    ``stop``: the silence after speech lasted long enough; speech ended at ``speech_end`` and the
    decision was made at ``sample`` (= speech_end + silence). Sample indices are at 16 kHz, counted
    from the first sample fed."""

    kind: Literal["start", "stop"]
    sample: int
    speech_end: int | None = None


class VadStream:
    """Frame-by-frame turn detection for live audio (16 kHz float32 in any block sizes).

    Not thread-safe; one per session. Besides events it exposes ``speaking`` and
    ``quiet_since`` (the sample where the current pause began, or None), so a caller can start
    decoding a turn while waiting to know whether the pause is its end.
    """

    def __init__(self, *, threshold: float = 0.5, silence_ms: int = 500, prefix_ms: int = 300,
                 min_speech_ms: int = 64, model: SileroVad | None = None) -> None:
        self.opts = VadOptions(threshold=threshold, min_silence_ms=silence_ms, speech_pad_ms=prefix_ms,
                               min_speech_ms=min_speech_ms).check()
        self.model = model or load_vad()
        self._state = self.model.initial_state()
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.frames = 0  # frames scored so far
        self.speaking = False
        self.quiet_since: int | None = None
        self._candidate: int | None = None  # first frame of a possible start (min_speech not yet met)
        self.last_prob = 0.0

    def reset(self) -> None:
        """Forget the turn in progress (after input_audio_buffer.clear); the model state is kept."""
        self.speaking = False
        self.quiet_since = None
        self._candidate = None

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        x = np.concatenate([self._pending, np.asarray(samples, np.float32)]) if self._pending.size else \
            np.asarray(samples, np.float32)
        n = x.size // FRAME
        self._pending = x[n * FRAME:].copy()
        if n == 0:
            return []
        body = x[: n * FRAME]
        probs, self._state = self.model.run(_framed(body, self._context), self._state)
        self._context = body[-CONTEXT:].copy()
        events: list[VadEvent] = []
        for p in probs.tolist():
            ev = self._step(p)
            if ev is not None:
                events.append(ev)
        return events

    def _step(self, p: float) -> VadEvent | None:
        i = self.frames
        self.frames += 1
        self.last_prob = p
        o = self.opts
        if not self.speaking:
            if p < o.threshold:
                self._candidate = None
                return None
            if self._candidate is None:
                self._candidate = i
            if (i + 1 - self._candidate) * FRAME * 1000 < o.min_speech_ms * VAD_RATE:
                return None
            self.speaking, self.quiet_since = True, None
            start = max(0, self._candidate * FRAME - o.speech_pad_ms * VAD_RATE // 1000)
            self._candidate = None
            return VadEvent("start", start)
        if p >= o.threshold:
            self.quiet_since = None
        elif p < o.low:
            if self.quiet_since is None:
                self.quiet_since = i * FRAME
            if (i + 1) * FRAME - self.quiet_since >= o.min_silence_ms * VAD_RATE // 1000:
                end = self.quiet_since
                self.speaking, self.quiet_since = False, None
                return VadEvent("stop", (i + 1) * FRAME, speech_end=end)
        return None


def describe(spans: list[SpeechSpan]) -> dict[str, Any]:
    """Totals for reports: speech seconds and region count."""
    return {"regions": len(spans), "speech_seconds": round(sum(s.duration for s in spans), 3)}
