"""OmniVoice's audio clean-up (upstream ``omnivoice/utils/audio.py`` and ``_post_process_audio``), in numpy.

Upstream trims silences with pydub on 16-bit PCM (``split_on_silence`` then edge trimming, -50
dBFS). pydub needs ``audioop`` (gone from Python 3.13) and upstream's module imports torchaudio,
so voxbox reproduces pydub's arithmetic here: millisecond positions mapped to samples with
``int(ms * rate / 1000)``, lengths ``round(1000 * n / rate)`` ms, zero fill where a slice runs past
the end, integer RMS, dBFS thresholds. The output is quantised to 16 bits as upstream's is.

Then the level (a cloned voice keeps the reference's quiet level, a designed or automatic voice is
peak-normalised to 0.5) and 0.1 s fades with 0.1 s of silence on each side.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["fade_and_pad", "fade_gains", "level", "postprocess", "remove_silence"]

_THRESH_DB = -50.0


class _Pcm:
    """pydub ``AudioSegment`` positions and RMS over mono int16 samples."""

    def __init__(self, x: np.ndarray, rate: int) -> None:
        self.x, self.rate = x, rate
        self.sq = np.concatenate([[0], np.cumsum(x.astype(np.int64) ** 2)])

    def __len__(self) -> int:
        return round(1000 * (len(self.x) / self.rate))

    def _frames(self, a: float, b: float) -> tuple[int, int]:
        n = len(self)
        return int(min(a, n) * (self.rate / 1000.0)), int(min(b, n) * (self.rate / 1000.0))

    def slice(self, a: float, b: float) -> np.ndarray:
        fa, fb = self._frames(a, b)
        data = self.x[fa:fb]
        missing = (fb - fa) - len(data)
        return np.concatenate([data, np.zeros(missing, np.int16)]) if missing > 0 else data

    def rms(self, a: float, b: float) -> int:
        fa, fb = self._frames(a, b)
        if fb <= fa:
            return 0
        n = len(self.x)
        return int(math.sqrt(float(self.sq[min(fb, n)] - self.sq[min(fa, n)]) / (fb - fa)))

    def quieter(self, a: float, b: float, db: float) -> bool:
        r = self.rms(a, b)
        return r == 0 or 20 * math.log10(r / 32768.0) < db


def _silent_ranges(seg: _Pcm, min_len: int, thresh_db: float, step: int) -> list[list[int]]:
    """pydub ``detect_silence``."""
    length = len(seg)
    if length < min_len:
        return []
    thresh = 10 ** (thresh_db / 20) * 32768.0
    last = length - min_len
    starts_iter = range(0, last + 1, step)
    starts = list(itertools.chain(starts_iter, [last])) if last % step else list(starts_iter)
    silent = [i for i in starts if seg.rms(i, i + min_len) <= thresh]
    if not silent:
        return []
    ranges, prev = [], silent[0]
    begin = prev
    for i in silent[1:]:
        if i != prev + step and i > prev + min_len:
            ranges.append([begin, prev + min_len])
            begin = i
        prev = i
    ranges.append([begin, prev + min_len])
    return ranges


def _nonsilent(seg: _Pcm, min_len: int, thresh_db: float, step: int) -> list[list[int]]:
    """pydub ``detect_nonsilent``."""
    silent = _silent_ranges(seg, min_len, thresh_db, step)
    length = len(seg)
    if not silent:
        return [[0, length]]
    if silent[0][0] == 0 and silent[0][1] == length:
        return []
    out, prev_end = [], 0
    for a, b in silent:
        out.append([prev_end, a])
        prev_end = b
    if silent[-1][1] != length:
        out.append([prev_end, length])
    if out[0] == [0, 0]:
        out.pop(0)
    return out


def _leading_silence(seg: _Pcm, db: float, chunk: int = 10) -> int:
    trim = 0
    while seg.quieter(trim, trim + chunk, db) and trim < len(seg):
        trim += chunk
    return min(trim, len(seg))


def remove_silence(
    audio: np.ndarray, rate: int, mid_ms: int = 300, lead_ms: int = 100, trail_ms: int = 300
) -> np.ndarray:
    """Shorten silences longer than ``mid_ms`` (keeping ``mid_ms`` of each side) and trim the edges
    to ``lead_ms``/``trail_ms`` of silence; float32 in, 16-bit-quantised float32 out."""
    x = (audio * 32768.0).clip(-32768, 32767).astype(np.int16)
    seg = _Pcm(x, rate)
    if mid_ms > 0:
        ranges = [[a - mid_ms, b + mid_ms] for a, b in _nonsilent(seg, mid_ms, _THRESH_DB, 10)]
        for r1, r2 in itertools.pairwise(ranges):
            if r2[0] < r1[1]:
                r1[1] = (r1[1] + r2[0]) // 2
                r2[0] = r1[1]
        length = len(seg)
        parts = [seg.slice(max(a, 0), min(b, length)) for a, b in ranges]
        seg = _Pcm(np.concatenate(parts) if parts else np.zeros(0, np.int16), rate)
    start = max(0, _leading_silence(seg, _THRESH_DB) - lead_ms)
    seg = _Pcm(seg.slice(start, len(seg)), rate)
    rev = _Pcm(seg.x[::-1].copy(), rate)
    start = max(0, _leading_silence(rev, _THRESH_DB) - trail_ms)
    out = rev.slice(start, len(rev))[::-1]
    return out.astype(np.float32) / 32768.0


def level(audio: np.ndarray, ref_rms: float | None) -> np.ndarray:
    """A quiet reference (RMS < 0.1) keeps its level; no reference: peak at 0.5."""
    if ref_rms is not None and ref_rms < 0.1:
        return audio * ref_rms / 0.1
    if ref_rms is None and audio.size:
        peak = np.abs(audio).max()
        if peak > 1e-6:
            return audio / peak * 0.5
    return audio


def fade_gains(total: int, rate: int, fade_s: float) -> int:
    """Samples faded at each end of a ``total``-sample piece."""
    return min(int(fade_s * rate), total // 2)


def fade_and_pad(audio: np.ndarray, rate: int, pad_s: float = 0.1, fade_s: float = 0.1) -> np.ndarray:
    if audio.shape[-1] == 0:
        return audio
    out = audio.copy()
    k = fade_gains(out.shape[-1], rate, fade_s)
    if k > 0:
        out[:k] *= np.linspace(0, 1, k, dtype=np.float32)
        out[-k:] *= np.linspace(1, 0, k, dtype=np.float32)
    pad = int(pad_s * rate)
    if pad > 0:
        z = np.zeros(pad, dtype=out.dtype)
        out = np.concatenate([z, out, z])
    return out


def postprocess(audio: np.ndarray, rate: int, ref_rms: float | None, *, trim_silence: bool, pad_s: float = 0.1,
                fade_s: float = 0.1) -> np.ndarray:
    """Upstream ``_post_process_audio`` on one piece of decoded audio."""
    if trim_silence:
        audio = remove_silence(audio, rate, mid_ms=500, lead_ms=100, trail_ms=100)
    return fade_and_pad(level(audio, ref_rms), rate, pad_s, fade_s)
