"""Plausibility bounds for decoding: refuse inputs whose headers cannot be true before decoding
them, and stop a decode whose output outgrows what its bytes or the duration limit allow.

A 7 KB WAV that declares a 1 Hz sample rate holds an hour of "audio"; upsampled to 16 kHz that is
230 MB of float32 per upload. Three checks keep memory bounded by the upload, not by its header:

* **sample rate**: every declared and decoded rate must lie in ``[MIN_SAMPLE_RATE,
  MAX_SAMPLE_RATE]`` (8 kHz – 384 kHz; below is not speech audio, above no converter records);
* **bytes vs duration**: a codec turns one input byte into a bounded number of samples per
  channel: exactly ``8 / (bits * channels)`` for PCM, at most 8 for ADPCM-like codecs, and at most
  ``COMPRESSED_SAMPLES_PER_BYTE`` for anything else (generous: a FLAC block of digital silence or
  a 120 ms Opus DTX packet reaches a few thousand). A header that declares more, or a decoder
  that produces more, is refused;
* **duration**: a declared duration beyond ``max_duration`` is refused before decoding
  (``AudioTooLongError``); while decoding, output stops at ``max_duration`` seconds.

Refusals are ``ImplausibleAudioError`` (HTTP 400, ``param="file"``) or ``AudioTooLongError`` (413).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxbox.errors import AudioTooLongError, ImplausibleAudioError

__all__ = [
    "COMPRESSED_SAMPLES_PER_BYTE",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "DecodeGuard",
    "samples_per_byte",
]

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
#: Most samples (per channel) one byte of a non-PCM codec may decode to.
COMPRESSED_SAMPLES_PER_BYTE = 8192
#: ADPCM/G.72x families code 2-4 bits per sample.
_LOW_BIT_CODECS = ("adpcm_", "g722", "g723", "g726", "g729", "gsm", "pcm_dvd", "pcm_bluray")
_PARAM = "file"
_PCM_BITS = re.compile(r"pcm_[fsu](\d+)")


def samples_per_byte(codec: str, channels: int) -> float:
    """Upper bound on decoded samples per channel per input byte for ``codec`` (libav name)."""
    ch = max(1, int(channels or 1))
    name = codec.lower()
    if name.startswith(_LOW_BIT_CODECS):
        return 8.0 / ch
    if name.startswith("pcm_"):
        m = _PCM_BITS.match(name)
        bits = int(m.group(1)) if m else 8  # alaw, mulaw, vidc...: 8 bits
        return 8.0 / (bits * ch)
    return float(COMPRESSED_SAMPLES_PER_BYTE)


def _seconds(x: float) -> str:
    return f"{x:.3g} s" if x < 1000 else f"{x:,.0f} s"


@dataclass
class DecodeGuard:
    """The bounds for one decode of ``nbytes`` input bytes; ``check_header`` once, ``add`` per frame."""

    nbytes: int
    max_duration: float | None
    min_rate: int = MIN_SAMPLE_RATE
    max_rate: int = MAX_SAMPLE_RATE
    codec: str = "?"
    per_byte: float = float(COMPRESSED_SAMPLES_PER_BYTE)
    decoded_samples: int = 0  # per channel, at the codec's rate
    decoded_seconds: float = 0.0

    def check_rate(self, rate: int, where: str = "declares") -> None:
        if not self.min_rate <= rate <= self.max_rate:
            raise ImplausibleAudioError(
                f"the audio {where} a sample rate of {rate} Hz; voxbox accepts {self.min_rate}-{self.max_rate} Hz",
                param=_PARAM)

    @property
    def max_samples(self) -> int:
        """Most samples per channel ``nbytes`` of this codec can hold (one codec frame of slack)."""
        return int(self.nbytes * self.per_byte) + 8192

    def check_header(self, codec: str, rate: int | None, channels: int | None, duration: float | None) -> None:
        """Refuse a header that cannot be true, or that declares more than ``max_duration``."""
        self.codec = codec or "?"
        self.per_byte = samples_per_byte(self.codec, channels or 1)
        if rate:
            self.check_rate(int(rate))
        if duration is None or duration <= 0:
            return
        if rate and duration * rate > self.max_samples:
            raise ImplausibleAudioError(
                f"the file declares {_seconds(duration)} of {self.codec} audio at {rate} Hz, but {self.nbytes} bytes "
                f"can hold at most {_seconds(self.max_samples / rate)}", param=_PARAM)
        # PCM durations come from the byte count (exact); compressed ones may be estimates.
        slack = 1.0 if self.codec.startswith("pcm_") else 1.5
        if self.max_duration is not None and duration > self.max_duration * slack + 1e-6:
            raise AudioTooLongError(
                f"the audio lasts {_seconds(duration)}; the maximum is {_seconds(self.max_duration)}", param=_PARAM)

    def add(self, samples: int, rate: int) -> None:
        """Account for one decoded frame; raise once the running totals pass a bound."""
        self.check_rate(rate, where="has a frame with")
        self.decoded_samples += samples
        self.decoded_seconds += samples / rate
        if self.max_duration is not None and self.decoded_seconds > self.max_duration + 1e-9:  # float sum slack
            raise AudioTooLongError(f"audio is longer than the maximum of {self.max_duration:g} s", param=_PARAM)
        if self.decoded_samples > self.max_samples:
            raise ImplausibleAudioError(
                f"{self.nbytes} bytes of {self.codec} decoded to more audio than they can hold "
                f"({self.decoded_samples} samples per channel); the file is corrupt or crafted", param=_PARAM)

    def output_capacity(self, declared: float | None, out_rate: int | None) -> int:
        """Samples to reserve for the output: the declared length, capped by both bounds."""
        rate = out_rate or self.max_rate
        cap = self.max_duration * rate if self.max_duration is not None else float("inf")
        if declared and declared > 0:
            cap = min(cap, declared * rate * 1.01 + rate)
        else:
            cap = min(cap, 30 * rate)
        return max(4096, int(min(cap, 1 << 31)))
