"""Whisper log-mel features: one filterbank, a numpy path and a torch path (on the device).

The recipe is openai-whisper's (also faster-whisper's ``FeatureExtractor`` and transformers'
``WhisperFeatureExtractor``): a 400-point periodic Hann window, hop 160, a centred reflect-padded
STFT, the power spectrum without its last frame, a Slaney-normalised mel filterbank (librosa's
default), ``log10`` clamped at 1e-10, dynamic range limited to 8 (80 dB) below the peak, then
``(x + 4) / 4``. ``tests/unit/test_whisper_core.py`` checks that both paths here and faster-whisper's
extractor give the same features.

Why not faster-whisper's ``FeatureExtractor`` for the numpy path: it computes the whole clip's
complex STFT at once, so its peak memory grows with the audio (about 650 MB for ten minutes, 5x
this module's, whose STFT runs in blocks of ``_BLOCK`` frames); and importing it imports
CTranslate2, which onnx-whisper and torch-whisper do not otherwise need. The filterbank is shared
by both paths here and equals faster-whisper's to float32 precision.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHUNK_FRAMES",
    "CHUNK_SAMPLES",
    "CHUNK_SECONDS",
    "FRAME_SECONDS",
    "HOP_LENGTH",
    "N_FFT",
    "SAMPLE_RATE",
    "log_mel",
    "log_mel_torch",
    "mel_filters",
    "pad_or_trim",
]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
CHUNK_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples per window
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01 s per mel frame

_F_SP = 200.0 / 3  # Slaney scale: linear below 1 kHz ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0  # ... logarithmic above
_BLOCK = 2048  # STFT frames per block in the numpy path (bounds the complex spectrum's memory)


def _hz_to_mel(f: float) -> float:
    if f < _MIN_LOG_HZ:
        return f / _F_SP
    return float(_MIN_LOG_MEL + np.log(f / _MIN_LOG_HZ) / _LOGSTEP)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney mel filterbank (librosa ``filters.mel(sr=16000, n_fft=n_fft, norm="slaney")``),
    shape (n_mels, n_fft // 2 + 1), float32, read-only (cached). Whisper uses n_fft 400; NeMo's
    FastConformer front-end (Parakeet) the same bank at n_fft 512."""
    fmax = SAMPLE_RATE / 2.0
    fft_freqs = np.linspace(0.0, fmax, n_fft // 2 + 1)
    hz_pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    enorm = 2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels])  # Slaney area normalisation
    out = (weights * enorm[:, None]).astype(np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann


def _finish(mel_power: np.ndarray) -> np.ndarray:
    log_spec = np.log10(np.maximum(mel_power, 1e-10))
    if log_spec.size:
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def log_mel(samples: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """16 kHz mono samples -> log-mel (n_mels, frames), float32, with numpy.

    ``padding`` zero samples are appended first (the transcribe loops pad 30 s so that the last
    window is full).
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if padding:
        x = np.concatenate([x, np.zeros(int(padding), np.float32)])
    half = N_FFT // 2
    if x.size <= half:  # reflect padding needs more samples than half a window
        x = np.concatenate([x, np.zeros(half + 1 - x.size, np.float32)])
    x = np.pad(x, (half, half), mode="reflect")
    n_frames = 1 + (x.size - N_FFT) // HOP_LENGTH - 1  # the reference drops the last STFT frame
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0]), writeable=False
    )
    filters, win = mel_filters(n_mels), _window()
    out = np.empty((n_mels, n_frames), np.float32)
    for start in range(0, n_frames, _BLOCK):
        stop = min(start + _BLOCK, n_frames)
        spec = np.fft.rfft(frames[start:stop] * win, axis=-1)
        power = spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2
        out[:, start:stop] = filters @ power.T
    return _finish(out)


_TORCH_CACHE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def log_mel_torch(samples: torch.Tensor, n_mels: int = 80, padding: int = 0) -> torch.Tensor:
    """16 kHz mono samples (n,) or (batch, n) -> log-mel (..., n_mels, frames), float32, computed
    with torch on ``samples``' device. The dynamic-range clamp is per batch row."""
    import torch

    x = samples.to(torch.float32)
    if padding:
        x = torch.nn.functional.pad(x, (0, int(padding)))
    key = (n_mels, str(x.device))
    if key not in _TORCH_CACHE:
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=x.device)
        _TORCH_CACHE[key] = (window, torch.from_numpy(mel_filters(n_mels).copy()).to(x.device))
    window, filters = _TORCH_CACHE[key]
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


def pad_or_trim(mel: np.ndarray, frames: int = CHUNK_FRAMES) -> np.ndarray:
    """Cut or zero-pad the last axis of a numpy log-mel to ``frames``."""
    if mel.shape[-1] > frames:
        return mel[..., :frames]
    if mel.shape[-1] < frames:
        pad = [(0, 0)] * (mel.ndim - 1) + [(0, frames - mel.shape[-1])]
        return np.pad(mel, pad)
    return mel
