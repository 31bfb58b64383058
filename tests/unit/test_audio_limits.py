"""Decoding is bounded by the input, not by what its header claims (issue #12, part 2), and every
malformed WAV header is a voxbox 4xx error, never an AttributeError (part 3)."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import numpy as np
import pytest

from voxbox.audio.decode import decode, probe_duration
from voxbox.audio.encode import encode
from voxbox.audio.limits import (
    COMPRESSED_SAMPLES_PER_BYTE,
    DecodeGuard,
    samples_per_byte,
)
from voxbox.errors import (
    AudioDecodeError,
    AudioTooLongError,
    ImplausibleAudioError,
    UnsupportedFormatError,
)
from voxbox.types import Audio


def wav(*, rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1, frames: int = 1600,
        data: bytes | None = None, ext: bytes | None = None) -> bytes:
    """A WAV written by hand so that header fields can lie."""
    if data is None:
        data = (np.random.default_rng(0).standard_normal(frames * channels) * 3000).astype("<i2").tobytes()
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits) + (ext or b"")
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def numpy_peak(fn) -> int:
    """Peak bytes numpy (traced by tracemalloc) allocated while ``fn`` ran."""
    tracemalloc.start()
    with contextlib.suppress(Exception):  # the caller checks the exception separately
        fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------------------------
# sample rate


def test_one_hz_wav_refused_before_decoding():
    bomb = wav(rate=1, frames=3500)  # 7 KB that declares 3,500 s
    assert len(bomb) < 8000
    with pytest.raises(ImplausibleAudioError) as ei:
        decode(bomb, sample_rate=16000, max_duration=3600)
    assert ei.value.param == "file" and "1 Hz" in str(ei.value)
    assert isinstance(ei.value, AudioDecodeError)  # still an AudioDecodeError for callers that catch that
    assert numpy_peak(lambda: decode(bomb, sample_rate=16000, max_duration=3600)) < 1 << 20
    # negative control: the same file with the rate bound lowered really is ~an hour of samples
    small = wav(rate=1, frames=100)
    a = decode(small, sample_rate=16000, max_duration=3600, min_source_rate=1)
    assert len(a) == 100 * 16000


@pytest.mark.parametrize("rate,ok", [(7999, False), (8000, True), (384000, True), (384001, False)])
def test_sample_rate_bounds(rate, ok):
    data = wav(rate=rate, frames=rate // 10)
    if ok:
        assert decode(data).sample_rate == rate
    else:
        with pytest.raises(ImplausibleAudioError):
            decode(data)


# --------------------------------------------------------------------------------------------
# declared duration and bytes


def test_declared_duration_over_max_is_413_before_decoding():
    data = wav(rate=16000, frames=16000 * 60)  # 60 s
    with pytest.raises(AudioTooLongError) as ei:
        decode(data, sample_rate=16000, max_duration=30)
    assert "60 s" in str(ei.value) and "30 s" in str(ei.value)
    # refused from the header: no output buffer was filled (60 s at 16 kHz would be 3.8 MB)
    assert numpy_peak(lambda: decode(data, sample_rate=16000, max_duration=30)) < 1 << 20
    assert len(decode(data, sample_rate=16000, max_duration=60)) == 16000 * 60  # at the bound is fine


def _flac_total_samples(flac: bytes, total: int) -> bytes:
    b = bytearray(flac)
    si = 8  # 'fLaC' + metadata block header: STREAMINFO starts here
    bits = int.from_bytes(b[si + 10 : si + 18], "big")
    bits = (bits & ~0xFFFFFFFFF) | total
    b[si + 10 : si + 18] = bits.to_bytes(8, "big")
    return bytes(b)


def test_flac_header_claiming_more_than_its_bytes_hold_is_400():
    flac = encode(Audio(np.zeros(4000, np.float32), 16000), "flac")
    assert decode(flac).sample_rate == 16000
    liar = _flac_total_samples(flac, 2**36 - 1)  # ~50 days at 16 kHz in a few hundred bytes
    assert probe_duration(liar) > 1e6
    with pytest.raises(ImplausibleAudioError) as ei:
        decode(liar, max_duration=None)
    assert f"{len(liar)} bytes" in str(ei.value)


def test_samples_per_byte_by_codec_family():
    assert samples_per_byte("pcm_s16le", 1) == 0.5
    assert samples_per_byte("pcm_s16le", 2) == 0.25
    assert samples_per_byte("pcm_s24le", 1) == pytest.approx(1 / 3)
    assert samples_per_byte("pcm_u8", 1) == samples_per_byte("pcm_alaw", 1) == 1.0
    assert samples_per_byte("pcm_f64le", 1) == 0.125
    assert samples_per_byte("adpcm_ima_wav", 1) == 8.0
    assert samples_per_byte("opus", 2) == samples_per_byte("flac", 1) == COMPRESSED_SAMPLES_PER_BYTE


def test_running_bound_stops_output_beyond_the_bytes():
    g = DecodeGuard(nbytes=10_000, max_duration=None)
    g.check_header("pcm_s16le", 16000, 1, None)
    assert g.max_samples == 5000 + 8192
    g.add(13_000, 16000)
    with pytest.raises(ImplausibleAudioError):
        g.add(500, 16000)
    g = DecodeGuard(nbytes=10_000, max_duration=1.0)
    g.check_header("opus", 48000, 2, None)
    g.add(48000, 48000)
    with pytest.raises(AudioTooLongError):
        g.add(1, 48000)
    with pytest.raises(ImplausibleAudioError):  # a frame at an impossible rate mid-stream
        DecodeGuard(nbytes=10_000, max_duration=None).add(10, 4000)


def test_real_silence_is_not_implausible():
    """Compressed digital silence is the most samples per byte real files reach: still accepted."""
    for fmt in ("flac", "opus", "aac", "mp3"):
        data = encode(Audio(np.zeros(48000 * 20, np.float32), 48000), fmt)
        a = decode(data, sample_rate=16000)
        assert abs(a.duration - 20) < 0.2, fmt


def test_output_array_is_exact_and_owned():
    x = (np.sin(np.arange(16000 * 3) * 0.05) * 0.5).astype(np.float32)
    a = decode(encode(Audio(x, 16000), "wav"))
    assert a.samples.dtype == np.float32 and a.samples.flags.owndata and a.samples.flags.c_contiguous
    assert len(a) == len(x) and np.max(np.abs(a.samples - x)) < 1e-4


# --------------------------------------------------------------------------------------------
# malformed WAV headers are 4xx errors (PyAV 18 has no stream.codec for the old error path)


@pytest.mark.parametrize("name,data", [
    ("unknown-tag", wav(tag=0x1234)),
    ("zero-bits", wav(bits=0, data=bytes(3200))),
    ("extensible-without-extension", wav(tag=0xFFFE)),
    ("extensible-short-extension", wav(tag=0xFFFE, ext=b"\x02\x00\x10\x00")),
    ("float-with-16-bits", wav(tag=3, bits=16)),
])
def test_malformed_wav_is_unsupported_format(name, data):
    with pytest.raises(UnsupportedFormatError) as ei:
        decode(data, sample_rate=16000)
    assert ei.value.param == "file" and "\n" not in str(ei.value), name


@pytest.mark.parametrize("channels,bits", [(0, 16), (255, 16), (1, 7), (1, 64), (65535, 16)])
def test_lying_wav_fields_are_decode_errors_or_decode(channels, bits):
    data = wav(channels=channels, bits=bits, data=bytes(6400))
    try:
        a = decode(data, sample_rate=16000)
    except AudioDecodeError as exc:
        assert exc.param == "file"
    else:
        assert len(a) <= len(data)  # whatever was decoded, it is bounded by the bytes
