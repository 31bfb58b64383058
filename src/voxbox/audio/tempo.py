"""Tempo change without pitch change, on PyAV's ``atempo`` filter (libavfilter, in-process).

TTS engines control speed natively (duration scaling), but only within a range: hibari and Piper
reach about 2.1-2.5x when asked for 4x. An engine synthesises at the speed it can do well and
:func:`time_stretch` makes up the rest, so the delivered audio meets the requested speed.

``atempo`` is built for factors in [0.5, 2.0]; larger or smaller factors are chained stages within
that range (4.0 = 2.0 x 2.0, 0.25 = 0.5 x 0.5), which keeps its WSOLA quality at every stage.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import av
import numpy as np

__all__ = ["atempo_stages", "split_speed", "time_stretch"]

_MIN_STAGE, _MAX_STAGE = 0.5, 2.0
_BLOCK = 1 << 16


def atempo_stages(factor: float) -> list[float]:
    """Split ``factor`` into equal ``atempo`` stages, each within [0.5, 2.0]."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"tempo factor must be a positive finite number, got {factor}")
    n = max(1, math.ceil(abs(math.log(factor)) / math.log(_MAX_STAGE) - 1e-9))
    stage = factor ** (1.0 / n)
    return [stage] * n


def time_stretch(samples: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Mono float32 ``samples`` played ``factor`` times faster at the same pitch.

    The result has about ``len(samples) / factor`` samples. ``factor`` 1 (within 0.1%) returns the
    input unchanged.
    """
    x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if x.size == 0 or abs(factor - 1.0) < 1e-3:
        return x
    graph = av.filter.Graph()
    src = graph.add_abuffer(format="flt", sample_rate=int(sample_rate), layout="mono", channels=1,
                            time_base=Fraction(1, int(sample_rate)))
    chain = [src] + [graph.add("atempo", f"{s:.6f}") for s in atempo_stages(factor)] + [graph.add("abuffersink")]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    out: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                frame = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            out.append(frame.to_ndarray().reshape(-1))

    for start in range(0, x.size, _BLOCK):
        piece = x[start:start + _BLOCK]
        frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = int(sample_rate)
        frame.pts = start
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


def split_speed(speed: float, native_range: tuple[float, float]) -> tuple[float, float]:
    """(speed the engine synthesises at, tempo factor :func:`time_stretch` applies after).

    ``native_range`` is where the engine's own duration control delivers the speed it is asked for
    (within a few percent); outside it the engine runs at the nearest bound and the rest is
    time-stretched, so ``native * stretch == speed``.
    """
    lo, hi = native_range
    native = min(max(speed, lo), hi)
    return native, speed / native
