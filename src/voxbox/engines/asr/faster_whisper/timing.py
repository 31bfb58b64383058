"""Stage timings for faster-whisper: its feature extractor and encoder are wrapped so that their
time is counted as ``features`` and ``encode``; the rest of an outer span (the eager call, one step
of the segment iterator) goes to that span's stage, so stages never overlap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from voxbox.types import StageTimings

__all__ = ["Meter", "timed_model_class"]

_tls = threading.local()


class Meter:
    """Attributes inner stages (features, encode) and the remainder of an outer span to one timings."""

    def __init__(self, timings: StageTimings) -> None:
        self.timings = timings
        self.inner = 0.0

    @contextmanager
    def outer(self, stage: str) -> Iterator[None]:
        prev = getattr(_tls, "meter", None)
        _tls.meter = self
        inner0 = self.inner
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.timings.add(stage, max(0.0, elapsed - (self.inner - inner0)))
            _tls.meter = prev


def _record_inner(stage: str, seconds: float) -> None:
    meter = getattr(_tls, "meter", None)
    if meter is not None:
        meter.timings.add(stage, seconds)
        meter.inner += seconds


class _TimedFeatureExtractor:
    def __init__(self, fe: Any) -> None:
        self._fe = fe

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._fe(*args, **kwargs)
        finally:
            _record_inner("features", time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fe, name)


def timed_model_class(faster_whisper: Any) -> Any:
    """A ``faster_whisper.WhisperModel`` subclass whose features and encoder passes are timed."""

    class TimedWhisperModel(faster_whisper.WhisperModel):  # type: ignore[name-defined,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.feature_extractor = _TimedFeatureExtractor(self.feature_extractor)  # type: ignore[has-type]

        def encode(self, features: np.ndarray) -> Any:
            t0 = time.perf_counter()
            try:
                return super().encode(features)
            finally:
                _record_inner("encode", time.perf_counter() - t0)

    return TimedWhisperModel
