"""Plain data types shared by engines, audio I/O, the server and the bench.

Everything here is a dataclass over numpy arrays and builtins: no torch, no HTTP.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np

__all__ = [
    "Audio",
    "AudioChunk",
    "CancelToken",
    "ComponentSpec",
    "EngineInfo",
    "Segment",
    "StageTimings",
    "TranscriptionInfo",
    "Word",
]


@dataclass(frozen=True)
class Audio:
    """Mono float32 PCM in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = np.asarray(self.samples)
        if s.ndim != 1:
            raise ValueError(f"Audio.samples must be 1-D (mono), got shape {s.shape}")
        if s.dtype != np.float32:
            s = s.astype(np.float32)
        object.__setattr__(self, "samples", s)
        if int(self.sample_rate) <= 0:
            raise ValueError("Audio.sample_rate must be positive")
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class AudioChunk:
    """One piece of a TTS stream: mono float32 samples, in order (``index`` counts from 0)."""

    samples: np.ndarray
    sample_rate: int
    index: int = 0
    text: str | None = None  # the text (sentence) this chunk speaks, when known

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    tokens: list[int] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None


class StageTimings:
    """Per-stage wall-clock seconds for one engine call (e.g. ``phonemize``, ``synthesize``).

    Stages may repeat (one per sentence); their times add up. Thread-safe so a server can read a
    snapshot while a worker thread is still filling it. Stages must not overlap in time, so their
    sum never exceeds the call's wall time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stages[stage] = self._stages.get(stage, 0.0) + float(seconds)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return dict(self._stages)

    @property
    def total(self) -> float:
        with self._lock:
            return sum(self._stages.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in self.as_dict().items())
        return f"StageTimings({inner})"


@dataclass
class TranscriptionInfo:
    """Eager metadata of a transcription; ``timings`` keeps filling while segments are iterated."""

    language: str | None
    language_probability: float | None
    duration: float
    task: Literal["transcribe", "translate"] = "transcribe"
    options: dict[str, Any] = field(default_factory=dict)
    timings: StageTimings = field(default_factory=StageTimings)


@dataclass(frozen=True)
class ComponentSpec:
    """A part of an engine that the hardware planner places on a device with a dtype.

    ``size_bytes`` is the memory the component needs at its widest supported dtype's element size
    scaled by ``params`` when known (the planner uses ``params`` x bytes-per-element + ``overhead``).
    """

    name: str  # e.g. "text_encoder", "dit", "autoencoder", "decoder"
    params: int  # number of parameters (0 if unknown)
    devices: tuple[str, ...] = ("cpu",)  # device kinds it can run on: "cpu", "cuda", "rocm"
    dtypes: tuple[str, ...] = ("float32",)  # supported dtypes, best first
    backend: str = "torch"  # "torch", "ctranslate2", "onnxruntime"
    kind: str = "transformer"  # "transformer", "conv", "vocoder", ... (quirks match on it)
    overhead_bytes: int = 0  # activations / KV caches beyond the weights
    #: Device kinds the planner picks without being asked (None: any of ``devices``); a voice that is
    #: faster than real time on one core declares ("cpu",) and goes to a GPU only when pinned there.
    auto_devices: tuple[str, ...] | None = None
    #: Dtypes the planner picks without being asked (None: any of ``dtypes``, the fastest probed
    #: winning); a component whose lower precision costs quality declares its precise dtype here
    #: (echo's autoencoder: float32, as upstream runs it) and runs in half precision only when pinned.
    auto_dtypes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EngineInfo:
    """What an engine is and how it was loaded; shown by ``voxbox engines`` and ``/v1/models``."""

    name: str  # engine name in the registry, e.g. "piper"
    task: Literal["tts", "asr"]
    model: str  # model id or path
    device: str = "cpu"
    dtype: str | None = None
    sample_rate: int | None = None  # output rate (TTS) or expected input rate (ASR)
    voices: tuple[str, ...] = ()
    default_voice: str | None = None
    languages: tuple[str, ...] = ()
    supports_cloning: bool = False
    supports_translation: bool = False
    supports_word_timestamps: bool = False
    max_concurrency: int = 1  # how many calls may run at once on one loaded instance
    extra: dict[str, Any] = field(default_factory=dict)


class CancelToken:
    """A thread-safe "stop now" flag shared by a caller and the engine doing its work.

    The runtime sets it when the caller disconnects, a deadline passes or the server drains;
    engines call :meth:`check` at least once per chunk (TTS) or window (ASR), and between decoder
    steps of long windows, so the work (and its admission slot) ends within one window::

        token = CancelToken()
        token.cancel("client disconnected")
        token.check()        # raises voxbox.errors.RequestCancelledError
    """

    __slots__ = ("_event", "reason", "_callbacks", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self._callbacks: list[Any] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def on_cancel(self, callback: Any) -> None:
        """Call ``callback()`` once when cancelled (at once if already cancelled)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def check(self) -> None:
        if self._event.is_set():
            from voxbox.errors import RequestCancelledError

            raise RequestCancelledError(f"work stopped: {self.reason}")

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)
