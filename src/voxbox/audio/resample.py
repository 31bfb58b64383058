"""Sample-rate conversion and down-mixing on PyAV's libswresample (no ffmpeg binary)."""

from __future__ import annotations

import av
import numpy as np

from voxbox.types import Audio

__all__ = ["resample", "resample_audio", "to_mono"]


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


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono float32 samples from ``src_rate`` to ``dst_rate`` with libswresample."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(dst_rate))
    out: list[np.ndarray] = []
    block = max(int(src_rate), 1) * 10  # feed 10 s at a time to bound frame size
    pts = 0
    for start in range(0, x.size, block):
        piece = x[start : start + block]
        frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = int(src_rate)
        frame.pts = pts
        pts += piece.size
        for of in resampler.resample(frame):
            out.append(of.to_ndarray().reshape(-1))
    for of in resampler.resample(None):
        out.append(of.to_ndarray().reshape(-1))
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    return y.astype(np.float32, copy=False)


def resample_audio(audio: Audio, dst_rate: int) -> Audio:
    if audio.sample_rate == dst_rate:
        return audio
    return Audio(resample(audio.samples, audio.sample_rate, dst_rate), dst_rate)
