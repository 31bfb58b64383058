"""Whisper log-mel features on the device (torch STFT), matching the reference extractor.

The reference (openai-whisper, faster-whisper, transformers' WhisperFeatureExtractor) uses a
400-point periodic Hann window, hop 160, centred reflect-padded STFT, the power spectrum without
its last frame, a Slaney-normalised mel filterbank (librosa's default), ``log10`` clamped at 1e-10,
dynamic range limited to 8 (80 dB) below the maximum, and ``(x + 4) / 4`` scaling.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SAMPLE_RATE", "N_FFT", "HOP_LENGTH", "CHUNK_SAMPLES", "CHUNK_FRAMES", "mel_filters", "log_mel"]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
CHUNK_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01 s per mel frame

_F_SP = 200.0 / 3  # Slaney scale: linear below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    mel = f / _F_SP
    log_part = f >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank (librosa ``filters.mel(htk=False, norm="slaney")``), (n_mels, n_fft//2+1)."""
    fmax = sample_rate / 2.0
    fft_freqs = np.linspace(0.0, fmax, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels])  # Slaney area normalisation
    return (weights * enorm[:, None]).astype(np.float32)


_CACHE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _window_and_filters(n_mels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (n_mels, str(device))
    if key not in _CACHE:
        window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=device)
        filters = torch.from_numpy(mel_filters(n_mels)).to(device)
        _CACHE[key] = (window, filters)
    return _CACHE[key]


def log_mel(samples: torch.Tensor, n_mels: int, padding: int = 0) -> torch.Tensor:
    """16 kHz mono float samples (n,) or (batch, n) -> log-mel (…, n_mels, frames), float32.

    ``padding`` zero samples are appended first (the reference pads 30 s so the last window is
    full). Computed on ``samples``' device; the dynamic-range clamp is per batch row.
    """
    x = samples.to(torch.float32)
    if padding:
        x = torch.nn.functional.pad(x, (0, padding))
    window, filters = _window_and_filters(n_mels, x.device)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = filters @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
