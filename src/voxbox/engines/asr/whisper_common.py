"""Whisper pieces that need neither torch nor a particular runtime: numpy log-mel features and the
greedy decoding rules (suppression, timestamp pairing) shared by numpy-based decoders.

The tokenizer is the torch-whisper engine's ``WhisperTokenizer`` (it only needs ``tokenizers``);
its torch STFT cannot be used without torch, so the features are re-done here with numpy and
checked against transformers' ``WhisperFeatureExtractor`` in the tests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "CHUNK_FRAMES",
    "CHUNK_SAMPLES",
    "HOP_LENGTH",
    "N_FFT",
    "SAMPLE_RATE",
    "apply_timestamp_rules",
    "log_mel",
    "mel_filters",
    "split_segments",
]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01
TIME_PRECISION = 0.02  # seconds per timestamp token
INPUT_STRIDE = 2  # mel frames per encoder position

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney mel filterbank (librosa ``filters.mel(sr=16000, n_fft=n_fft, norm="slaney")``), (n_mels, n_fft//2+1).

    Whisper uses n_fft 400; NeMo's FastConformer front-end (Parakeet) the same bank at n_fft 512."""
    fmax = SAMPLE_RATE / 2.0
    fft_freqs = np.linspace(0.0, fmax, n_fft // 2 + 1)
    hz_pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    enorm = 2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann


def log_mel(samples: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """16 kHz mono float32 samples -> Whisper log-mel (n_mels, frames), float32.

    ``padding`` zero samples are appended first (the reference pads 30 s so the last window is full).
    Same recipe as openai-whisper / transformers: centred reflect-padded STFT, power spectrum without
    the last frame, Slaney mel, log10 clamped at 1e-10, 8 below the peak, ``(x + 4) / 4``.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if padding:
        x = np.concatenate([x, np.zeros(int(padding), np.float32)])
    half = N_FFT // 2
    if x.size <= half:  # reflect padding needs more samples than half a window
        x = np.concatenate([x, np.zeros(half + 1 - x.size, np.float32)])
    x = np.pad(x, (half, half), mode="reflect")
    n_frames = 1 + (x.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0]), writeable=False
    )
    filters = mel_filters(n_mels)
    out = np.empty((n_mels, max(n_frames - 1, 0)), np.float32)
    win = _window()
    step = 4096  # bound the complex spectrum's memory on long audio
    for start in range(0, n_frames - 1, step):
        stop = min(start + step, n_frames - 1)
        spec = np.fft.rfft(frames[start:stop] * win, axis=-1)
        power = (spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2)
        out[:, start:stop] = filters @ power.T
    log_spec = np.log10(np.maximum(out, 1e-10))
    if log_spec.size:
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def pad_or_trim(mel: np.ndarray, frames: int = CHUNK_FRAMES) -> np.ndarray:
    if mel.shape[-1] > frames:
        return mel[..., :frames]
    if mel.shape[-1] < frames:
        pad = [(0, 0)] * (mel.ndim - 1) + [(0, frames - mel.shape[-1])]
        return np.pad(mel, pad)
    return mel


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def apply_timestamp_rules(logits: np.ndarray, sampled: list[int], *, eot: int, no_timestamps: int,
                          timestamp_begin: int, max_initial_timestamp_index: int | None = 50) -> None:
    """openai-whisper's ``ApplyTimestampRules``, in place on one row of logits.

    ``sampled``: the tokens generated so far after the prompt.
    """
    neg = -np.inf
    logits[no_timestamps] = neg
    last_ts = len(sampled) >= 1 and sampled[-1] >= timestamp_begin
    penultimate_ts = len(sampled) < 2 or sampled[-2] >= timestamp_begin
    if last_ts:
        if penultimate_ts:  # a pair is complete: text (or end) must follow
            logits[timestamp_begin:] = neg
        else:  # an opening timestamp must be closed (or the text ends)
            logits[:eot] = neg
    stamps = [t for t in sampled if t >= timestamp_begin]
    if stamps:
        last = stamps[-1] if (last_ts and not penultimate_ts) else stamps[-1] + 1
        logits[timestamp_begin:last] = neg  # timestamps never go backwards
    if not sampled:
        logits[:timestamp_begin] = neg  # the first token is a timestamp
        if max_initial_timestamp_index is not None:
            logits[timestamp_begin + max_initial_timestamp_index + 1 :] = neg
    lp = log_softmax(logits)
    ts_lp = lp[timestamp_begin:]
    finite = ts_lp[np.isfinite(ts_lp)]
    if finite.size:
        m = finite.max()
        ts_total = m + np.log(np.sum(np.exp(finite - m)))
        if ts_total > np.max(lp[:timestamp_begin]):
            logits[:timestamp_begin] = neg


def split_segments(tokens: list[int], timestamp_begin: int, time_offset: float, window_seconds: float,
                   window_frames: int) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut one window's tokens (eot removed) into (start, end, tokens) at consecutive timestamps.

    Returns the segments and how many mel frames the window consumed (openai-whisper's ``seek``
    advance): up to the last complete timestamp pair, or the whole window.
    """
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(is_ts) >= 2 and is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    out: list[tuple[float, float, list[int]]] = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cur in slices:
            piece = tokens[last:cur]
            start = time_offset + (piece[0] - timestamp_begin) * TIME_PRECISION
            end = time_offset + (piece[-1] - timestamp_begin) * TIME_PRECISION
            out.append((start, end, piece))
            last = cur
        if single_ending:
            advance = window_frames
        else:
            advance = (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
    else:
        duration = window_seconds
        stamps = [t for t in tokens if t >= timestamp_begin]
        if stamps and stamps[-1] != timestamp_begin:
            duration = (stamps[-1] - timestamp_begin) * TIME_PRECISION
        out.append((time_offset, time_offset + duration, tokens))
        advance = window_frames
    if advance <= 0:
        advance = window_frames
    return out, min(advance, window_frames)
