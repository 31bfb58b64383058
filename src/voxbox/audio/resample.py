"""Sample-rate conversion and down-mixing on PyAV's libswresample (no ffmpeg binary).

``StreamResampler`` converts a mono stream block by block (decoders and streaming encoders use
it); ``resample`` is the whole-array helper built on it. Output length is exact and
deterministic: ``round(n_in * dst_rate / src_rate)`` samples in total, however the input was cut
into blocks (libswresample's own flush loses the tail of very short inputs, so the flush pads
with silence and trims to that length).
"""

from __future__ import annotations

import av
import numpy as np

from voxbox.types import Audio

__all__ = ["StreamResampler", "resample", "resample_audio", "to_mono"]

#: Largest block handed to libswresample at once (bounds the size of one frame).
_MAX_BLOCK = 1 << 18
#: Silence pushed on flush so the filter's delay line drains completely.
_FLUSH_PAD = 1024


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(channels, n) or (n, channels) or (n,) float array -> (n,) float32 mean of channels."""
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise ValueError(f"expected 1-D or 2-D samples, got shape {a.shape}")
    # Treat the short axis as channels.
    axis = 0 if a.shape[0] <= a.shape[1] else 1
    return a.mean(axis=axis, dtype=np.float32)


class StreamResampler:
    """Incremental mono float32 resampler: ``push`` blocks, then ``flush`` once.

    The concatenation of everything returned has exactly ``round(n_in * dst_rate / src_rate)``
    samples. Not thread-safe; one instance per stream.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if int(src_rate) <= 0 or int(dst_rate) <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = int(src_rate)
        self.dst_rate = int(dst_rate)
        self._passthrough = self.src_rate == self.dst_rate
        self._resampler = (
            None if self._passthrough else av.AudioResampler(format="flt", layout="mono", rate=self.dst_rate)
        )
        self._pts = 0
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        assert self._resampler is not None
        out: list[np.ndarray] = []
        for start in range(0, x.size, _MAX_BLOCK):
            piece = np.ascontiguousarray(x[start : start + _MAX_BLOCK])
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self.src_rate
            frame.pts = self._pts
            self._pts += piece.size
            for of in self._resampler.resample(frame):
                out.append(of.to_ndarray().reshape(-1))
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed mono float32 samples; return the resampled samples ready so far (maybe empty)."""
        if self._flushed:
            raise RuntimeError("StreamResampler.push() after flush()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return np.zeros(0, np.float32)
        self._n_in += x.size
        if self._passthrough:
            self._n_out += x.size
            return x.copy()
        out = self._run(x)
        y = np.concatenate(out) if out else np.zeros(0, np.float32)
        # Never run ahead of the exact total (cannot happen with swr's delay, but be safe).
        limit = self._expected_total() - self._n_out
        y = y[: max(limit, 0)]
        self._n_out += y.size
        return y.astype(np.float32, copy=False)

    def _expected_total(self) -> int:
        return (self._n_in * self.dst_rate + self.src_rate // 2) // self.src_rate

    def flush(self) -> np.ndarray:
        """Return the remaining samples; the resampler cannot be used afterwards."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        if self._passthrough or self._n_in == 0:
            return np.zeros(0, np.float32)
        out = self._run(np.zeros(_FLUSH_PAD, np.float32))
        assert self._resampler is not None
        for of in self._resampler.resample(None):
            out.append(of.to_ndarray().reshape(-1))
        y = np.concatenate(out) if out else np.zeros(0, np.float32)
        need = self._expected_total() - self._n_out
        if y.size < need:  # defensive: never observed
            y = np.concatenate([y, np.zeros(need - y.size, np.float32)])
        y = y[: max(need, 0)]
        self._n_out += y.size
        self._resampler = None
        return y.astype(np.float32, copy=False)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono float32 samples from ``src_rate`` to ``dst_rate`` with libswresample.

    Returns exactly ``round(len(samples) * dst_rate / src_rate)`` samples.
    """
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    rs = StreamResampler(src_rate, dst_rate)
    head = rs.push(x)
    tail = rs.flush()
    return np.concatenate([head, tail]).astype(np.float32, copy=False)


def resample_audio(audio: Audio, dst_rate: int) -> Audio:
    if audio.sample_rate == dst_rate:
        return audio
    return Audio(resample(audio.samples, audio.sample_rate, dst_rate), dst_rate)
