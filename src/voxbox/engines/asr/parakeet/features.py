"""NeMo's FastConformer front-end: 16 kHz audio -> per-feature-normalised log-mel [B, F, T].

``AudioToMelSpectrogramPreprocessor`` as Parakeet is configured: pre-emphasis 0.97, 512-point STFT
(centred, zero-padded) with a 400-sample symmetric Hann window and a 160-sample hop, power
spectrum, Slaney mel bank 0–8 kHz (``F`` = 80 or 128 bins), ``log(x + 2**-24)``, then each mel
bin normalised over the valid frames (mean, unbiased std + 1e-5), frames past the length zeroed.
Valid frames = samples // 160.

Two implementations of the same arithmetic: numpy (the CPU path) and torch (GPU engines and the
batched GPU benchmark, where numpy features would cap throughput).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from voxbox.engines.asr.whisper.features import mel_filters

__all__ = ["HOP", "N_FFT", "WIN", "feature_lengths", "log_mel", "log_mel_torch"]

N_FFT = 512
WIN = 400
HOP = 160
PREEMPH = 0.97
LOG_GUARD = 2.0**-24


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    pad = (N_FFT - WIN) // 2
    return np.pad(np.hanning(WIN), (pad, pad)).astype(np.float32)


@lru_cache(maxsize=4)
def _bank(n_mels: int) -> np.ndarray:
    return np.ascontiguousarray(mel_filters(n_mels, N_FFT).T)  # (257, n_mels)


def feature_lengths(lengths: np.ndarray) -> np.ndarray:
    return (np.asarray(lengths, dtype=np.int64) // HOP).astype(np.int64)


def log_mel(waves: np.ndarray, lengths: np.ndarray, n_mels: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(features [B, n_mels, frames] float32, feature lengths [B] int64) for ``waves`` [B, samples]."""
    x = np.asarray(waves, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    x = x - PREEMPH * np.pad(x, ((0, 0), (1, 0)))[:, :-1]
    x = np.where(valid, x, 0.0).astype(np.float32)
    x = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=1)[:, ::HOP] * _window()
    power = np.abs(np.fft.rfft(frames, N_FFT)).astype(np.float32) ** 2
    mel = np.log(power @ _bank(n_mels) + LOG_GUARD)  # [B, frames, n_mels]
    flens = feature_lengths(lengths)
    mask = np.arange(mel.shape[1])[None, :, None] < flens[:, None, None]
    n = np.maximum(flens, 2)[:, None, None].astype(np.float32)
    mean = np.where(mask, mel, 0.0).sum(axis=1, keepdims=True) / np.maximum(flens, 1)[:, None, None]
    var = np.where(mask, (mel - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / (n - 1)
    out = np.where(mask, (mel - mean) / (np.sqrt(var) + 1e-5), 0.0).astype(np.float32)
    return np.ascontiguousarray(out.transpose(0, 2, 1)), flens


def log_mel_torch(waves: Any, lengths: Any, n_mels: int = 128) -> tuple[Any, Any]:
    """The same features in torch on ``waves``' device (float32 arithmetic)."""
    import torch

    x = waves.float()
    lengths = lengths.long()
    dev = x.device
    valid = torch.arange(x.shape[1], device=dev)[None, :] < lengths[:, None]
    x = torch.cat([x[:, :1], x[:, 1:] - PREEMPH * x[:, :-1]], dim=1)
    x = torch.where(valid, x, torch.zeros((), device=dev))
    x = torch.nn.functional.pad(x, (N_FFT // 2, N_FFT // 2))
    frames = x.unfold(1, N_FFT, HOP) * torch.from_numpy(_window()).to(dev)
    power = torch.fft.rfft(frames, n=N_FFT).abs() ** 2
    mel = torch.log(power @ torch.from_numpy(_bank(n_mels)).to(dev) + LOG_GUARD)
    flens = torch.div(lengths, HOP, rounding_mode="floor")
    mask = torch.arange(mel.shape[1], device=dev)[None, :, None] < flens[:, None, None]
    zero = torch.zeros((), device=dev)
    mean = torch.where(mask, mel, zero).sum(1, keepdim=True) / flens.clamp(min=1)[:, None, None]
    var = torch.where(mask, (mel - mean) ** 2, zero).sum(1, keepdim=True) / (flens.clamp(min=2) - 1)[:, None, None]
    out = torch.where(mask, (mel - mean) / (var.sqrt() + 1e-5), zero)
    return out.transpose(1, 2).contiguous(), flens
