"""Audio I/O on PyAV: decode, resample, encode (whole file and streamed). Fast, offline.

Every input file is generated here with PyAV or the ``wave`` module.
"""

from __future__ import annotations

import inspect
import io
import math
import struct
import wave

import av
import numpy as np
import pytest

import voxbox.audio as audio_pkg
from voxbox.audio import (
    DEFAULT_MAX_DURATION,
    FORMATS,
    MIME_TYPES,
    StreamEncoder,
    StreamResampler,
    decode,
    encode,
    encode_stream,
    probe_duration,
    resample,
    to_s16le,
)
from voxbox.errors import AudioDecodeError, AudioTooLongError, BadInputError, UnsupportedFormatError
from voxbox.types import Audio

SR = 24000
N = 36001  # 1.5 s and one sample: not a multiple of any codec frame


def tone(n: int = N, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def wav_bytes(x: np.ndarray, sr: int, sampwidth: int, channels: int = 1) -> bytes:
    """Integer PCM WAV via the stdlib ``wave`` module; ``x`` is (n,) or (n, channels) in [-1, 1]."""
    x = np.asarray(x, np.float64).reshape(-1)  # interleaved
    if sampwidth == 1:
        data = np.rint(x * 127 + 128).astype(np.uint8).tobytes()
    elif sampwidth == 2:
        data = np.rint(x * 32767).astype("<i2").tobytes()
    elif sampwidth == 3:
        i = np.rint(x * (2**23 - 1)).astype("<i4")
        data = np.frombuffer(i.tobytes(), np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = np.rint(x * (2**31 - 1)).astype("<i4").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(sr)
        w.writeframes(data)
    return buf.getvalue()


def av_bytes(container: str, codec: str, x: np.ndarray, sr: int, channels: int = 1, **opts: str) -> bytes:
    """Encode mono ``x`` (duplicated to ``channels``) with PyAV into ``container``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as c:
        s = c.add_stream(codec, rate=sr, layout="mono" if channels == 1 else "stereo")
        s.codec_context.options.update(opts)
        planar = s.codec_context.format.is_planar
        arr = np.repeat(x[None], channels, 0) if planar else np.repeat(x[:, None], channels, 1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(arr, np.float32),
            format="fltp" if planar else "flt",
            layout=s.codec_context.layout.name,
        )
        frame.sample_rate = sr
        frame.pts = 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return buf.getvalue()


def stream_encode(fmt: str, x: np.ndarray, sr: int, sizes=(1, 999, 0, 4800, 2400, 17)) -> list[bytes]:
    """Feed ``x`` in irregular blocks (incl. a 1-sample and an empty one); return all outputs."""
    enc = StreamEncoder(fmt, sr)
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(enc.feed(x[i : i + n]))
        i += n
        k += 1
    out.append(enc.close())
    return out


def decoded_length_bounds(fmt: str, n: int, sr: int, streamed: bool) -> tuple[int, int, int]:
    """(expected decoded rate, min length, max length) for ``n`` input samples at ``sr``.

    What each codec really does to the length (measured, and documented in encode.py):
    - wav/flac: lossless and exact. opus: exact after Ogg pre-skip/end trimming, always 48 kHz.
    - mp3 whole-file: the LAME header lets libavcodec trim delay and padding -> exact (we allow
      +-1 frame). Streamed mp3 has no LAME header: decoder output is N + 1152 rounded up to whole
      frames (576 samples at <= 24 kHz), i.e. N plus [1152, 1152 + frame).
    - aac (ADTS, as OpenAI returns): 1024 priming samples that ADTS cannot signal, then padding
      to a whole 1024-sample frame: N plus [1024, 2048).
    """
    if fmt == "opus":
        m = round(n * 48000 / sr)
        return 48000, m, m
    if fmt in ("wav", "flac"):
        return sr, n, n
    if fmt == "mp3":
        frame = 576 if sr <= 24000 else 1152
        if streamed:
            return sr, n + 1152, n + 1152 + frame - 1
        return sr, n - frame, n + frame
    if fmt == "aac":
        return sr, n + 1024, n + 2047
    raise AssertionError(fmt)


def best_correlation(y: np.ndarray, x: np.ndarray) -> float:
    """Max over offsets >= 0 of the normalised correlation of ``x`` with ``y[off:off+len(x)]``."""
    size = 1 << math.ceil(math.log2(len(y) + len(x)))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)[: len(y) - len(x) + 1]
    off = int(np.argmax(corr))
    seg = y[off : off + len(x)]
    return float(np.dot(seg, x) / (np.linalg.norm(seg) * np.linalg.norm(x) + 1e-12))


# --------------------------------------------------------------------------------------------
# API surface


def test_public_api_surface():
    for name in (
        "decode",
        "probe_duration",
        "encode",
        "StreamEncoder",
        "FORMATS",
        "MIME_TYPES",
        "DEFAULT_MAX_DURATION",
        "to_s16le",
        "resample",
        "resample_audio",
        "to_mono",
    ):
        assert name in audio_pkg.__all__, name
        assert hasattr(audio_pkg, name), name
    assert DEFAULT_MAX_DURATION == 7200.0
    assert set(FORMATS) == {"wav", "pcm", "flac", "mp3", "opus", "aac"}
    assert set(MIME_TYPES) == set(FORMATS) | {"m4a"}  # m4a: files only (FILE_FORMATS)
    assert MIME_TYPES["mp3"] == "audio/mpeg" and MIME_TYPES["wav"] == "audio/wav"

    p = inspect.signature(decode).parameters
    assert list(p)[:3] == ["source", "sample_rate", "max_duration"]
    assert p["sample_rate"].kind is inspect.Parameter.KEYWORD_ONLY and p["sample_rate"].default is None
    assert p["max_duration"].default == DEFAULT_MAX_DURATION
    p = inspect.signature(encode).parameters
    assert list(p)[:4] == ["audio", "fmt", "sample_rate", "bitrate"]
    assert p["sample_rate"].kind is inspect.Parameter.KEYWORD_ONLY
    p = inspect.signature(StreamEncoder).parameters
    assert list(p)[:3] == ["fmt", "sample_rate", "bitrate"]
    assert p["bitrate"].kind is inspect.Parameter.KEYWORD_ONLY


# --------------------------------------------------------------------------------------------
# Encode -> decode round trips


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "pcm"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_round_trip_length_and_rate(fmt, streamed):
    x = tone()
    if streamed:
        parts = stream_encode(fmt, x, SR)
        assert sum(1 for p in parts if p) >= 3, "a stream must produce bytes before close()"
        data = b"".join(parts)
    else:
        data = encode(Audio(x, SR), fmt)
    a = decode(data)
    rate, lo, hi = decoded_length_bounds(fmt, N, SR, streamed)
    assert a.sample_rate == rate
    assert lo <= len(a) <= hi, (fmt, len(a), lo, hi)
    # The signal survives: normalised correlation with the input at the best alignment.
    y = resample(a.samples, a.sample_rate, SR) if a.sample_rate != SR else a.samples
    assert best_correlation(y, x) > 0.95, fmt


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_formats_are_exact_streamed(fmt):
    x = tone()
    a = decode(b"".join(stream_encode(fmt, x, SR)))
    assert np.abs(a.samples - x).max() <= 1.0 / 32767 + 1e-6


def test_pcm_is_raw_s16le():
    x = tone()
    whole = encode(Audio(x, SR), "pcm")
    streamed = b"".join(stream_encode("pcm", x, SR))
    assert whole == streamed == to_s16le(x)
    assert len(whole) == 2 * N


def test_wav_headers():
    x = tone()
    whole = encode(Audio(x, SR), "wav")
    with wave.open(io.BytesIO(whole)) as w:  # real sizes in the whole file
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, N)
    assert struct.unpack("<I", whole[4:8])[0] == len(whole) - 8

    streamed = b"".join(stream_encode("wav", x, SR))
    assert streamed.count(b"RIFF") == 1 and streamed.count(b"WAVEfmt ") == 1
    assert streamed[4:8] == b"\xff\xff\xff\xff" and streamed[40:44] == b"\xff\xff\xff\xff"
    assert streamed[44:] == to_s16le(x)
    a = decode(streamed)  # unknown-length header: every sample still comes back
    assert len(a) == N and a.sample_rate == SR


@pytest.mark.parametrize("fmt", ["flac", "opus", "wav", "mp3"])
def test_first_feed_returns_bytes_at_once(fmt):
    enc = StreamEncoder(fmt, SR)
    first = enc.feed(tone(2400))  # 100 ms
    assert first, "no bytes after the first 100 ms block"
    enc.close()


def test_opus_resamples_unsupported_rates():
    x = tone(44100, 44100)
    enc = StreamEncoder("opus", 44100)
    assert enc.codec_rate == 48000 and enc.decoded_rate == 48000
    a = decode(encode(Audio(x, 44100), "opus"))
    assert a.sample_rate == 48000 and len(a) == 48000
    enc.abort()


def test_encode_sample_rate_and_bitrate():
    x = tone()
    a = decode(encode(Audio(x, SR), "wav", sample_rate=16000))
    assert a.sample_rate == 16000 and len(a) == round(N * 16000 / SR)
    small = encode(Audio(x, SR), "mp3", bitrate=32000)
    big = encode(Audio(x, SR), "mp3", bitrate=128000)
    assert len(small) < len(big)


def test_unknown_format_is_rejected():
    for call in (lambda: encode(Audio(tone(), SR), "ogg"), lambda: StreamEncoder("m4a", SR)):
        with pytest.raises(UnsupportedFormatError) as ei:
            call()
        assert ei.value.param == "response_format"
    with pytest.raises(UnsupportedFormatError):
        encode_stream(iter([]), "wma", SR)  # validated before the generator starts


def test_encode_stream_and_encoder_lifecycle():
    x = tone()
    chunks = [x[i : i + 5000] for i in range(0, N, 5000)]
    out = list(encode_stream(chunks, "flac", SR))
    assert all(out) and len(decode(b"".join(out))) == N
    enc = StreamEncoder("mp3", SR)
    enc.feed(x)
    enc.close()
    assert enc.close() == b""
    with pytest.raises(RuntimeError):
        enc.feed(x)
    with pytest.raises(BadInputError):
        StreamEncoder("wav", 0)


def test_to_s16le_clips_and_sanitises():
    b = to_s16le(np.array([0.0, 1.0, -1.0, 2.0, -3.0, np.nan, 0.5], np.float32))
    assert np.frombuffer(b, "<i2").tolist() == [0, 32767, -32767, 32767, -32767, 0, 16384]


# --------------------------------------------------------------------------------------------
# Decoding inputs


@pytest.mark.parametrize("sampwidth", [1, 2, 3, 4])
def test_integer_wav_depths(sampwidth):
    x = tone(16000, 16000)
    a = decode(wav_bytes(x, 16000, sampwidth))
    assert a.sample_rate == 16000 and len(a) == 16000 and a.samples.dtype == np.float32
    tol = {1: 1.5 / 128, 2: 1e-4, 3: 1e-6, 4: 1e-6}[sampwidth]
    assert np.abs(a.samples - x).max() <= tol


def test_stereo_is_downmixed_to_the_channel_mean():
    left, right = tone(8000, 16000, amp=0.6), tone(8000, 16000, freq=1000, amp=0.2)
    a = decode(wav_bytes(np.stack([left, right], 1), 16000, 2, channels=2))
    assert len(a) == 8000
    assert np.abs(a.samples - (left + right) / 2).max() < 1e-4


@pytest.mark.parametrize("sr", [48000, 96000])
@pytest.mark.parametrize("codec", ["pcm_f32le", "pcm_s24le"])
def test_float_and_high_rate_wav(sr, codec):
    x = tone(sr // 2, sr)
    data = av_bytes("wav", codec, x, sr, channels=2)
    a = decode(data)
    assert a.sample_rate == sr and len(a) == sr // 2
    assert np.abs(a.samples - x).max() < 1e-5
    a16 = decode(data, sample_rate=16000)
    assert a16.sample_rate == 16000 and len(a16) == 8000


@pytest.mark.parametrize(
    "container,codec,sr,opts",
    [
        ("ogg", "vorbis", 44100, {"strict": "-2"}),
        ("ogg", "libopus", 48000, {}),
        ("webm", "libopus", 48000, {}),
        ("ipod", "aac", 44100, {}),  # .m4a
        ("flac", "flac", 44100, {}),
        ("mp3", "libmp3lame", 44100, {}),
    ],
)
def test_common_containers(container, codec, sr, opts):
    x = tone(sr, sr)
    a = decode(av_bytes(container, codec, x, sr, channels=2, **opts), sample_rate=16000)
    assert a.sample_rate == 16000
    assert abs(len(a) - 16000) <= 1024  # at most one codec frame of priming/padding
    assert 0.3 < np.abs(a.samples).max() < 0.7


def test_resample_lengths_are_exact():
    for n, src in [(44100, 44100), (12345, 44100), (7, 8000), (100000, 96000), (1, 22050)]:
        y = resample(np.ones(n, np.float32), src, 16000)
        assert len(y) == (n * 16000 + src // 2) // src
    x = tone(80000, 48000)
    rs = StreamResampler(48000, 16000)
    parts = [rs.push(x[i : i + 777]) for i in range(0, len(x), 777)] + [rs.flush()]
    assert np.array_equal(np.concatenate(parts), resample(x, 48000, 16000))


def test_path_bytes_and_file_object_agree(tmp_path):
    data = wav_bytes(tone(8000, 16000), 16000, 2)
    p = tmp_path / "a.wav"
    p.write_bytes(data)

    class Pipe:  # non-seekable reader
        def __init__(self, b: bytes) -> None:
            self._b = io.BytesIO(b)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(n)

    results = [decode(p), decode(str(p)), decode(data), decode(bytearray(data)), decode(io.BytesIO(data))]
    results.append(decode(Pipe(data)))
    with open(p, "rb") as f:
        results.append(decode(f))
    for a in results:
        assert a.sample_rate == 16000 and np.array_equal(a.samples, results[0].samples)
    assert probe_duration(p) == pytest.approx(0.5)
    f = io.BytesIO(data)
    assert probe_duration(f) == pytest.approx(0.5) and f.tell() == 0


def test_tiny_adts_file_decodes():
    # Two ADTS frames are too few for libavformat's probe; decode retries as raw ADTS.
    a = decode(encode(Audio(tone(1000), SR), "aac"))
    assert a.sample_rate == SR and 1000 + 1024 <= len(a) < 1000 + 2048


# --------------------------------------------------------------------------------------------
# Bad input


def _bad_inputs(tmp_path):
    good = wav_bytes(tone(16000, 16000), 16000, 2)
    txt = tmp_path / "notes.wav"
    txt.write_text("This is a text file, renamed .wav; it is not audio.\n" * 40)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    return {
        "random": np.random.default_rng(1).bytes(65536),
        "random_small": np.random.default_rng(2).bytes(100),
        "zero_bytes": b"",
        "zero_file": empty,
        "zero_fileobj": io.BytesIO(b""),
        "header_only": wav_bytes(np.zeros(0), 16000, 2),
        "cut_header": good[:30],
        "text_as_wav": txt,
        "missing": tmp_path / "nope.wav",
    }


def test_bad_input_raises_audio_decode_error(tmp_path):
    for name, src in _bad_inputs(tmp_path).items():
        with pytest.raises(AudioDecodeError) as ei:
            decode(src)
        msg = str(ei.value)
        assert msg and "\n" not in msg, name
        assert ei.value.param == "file"
        assert not isinstance(ei.value, AudioTooLongError)


def test_random_bytes_never_decode():
    for seed in range(30):
        with pytest.raises(AudioDecodeError):
            decode(np.random.default_rng(seed).bytes(4096))


def test_av_errors_are_chained():
    with pytest.raises(AudioDecodeError) as ei:
        decode(b"definitely not audio" * 100)
    assert isinstance(ei.value.__cause__, av.FFmpegError)


# --------------------------------------------------------------------------------------------
# Bounded decoding


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        b = super().read(n)
        self.bytes_read += len(b)
        return b


def test_max_duration_stops_early():
    x = tone(16000 * 30, 16000)
    data = wav_bytes(x, 16000, 2)
    f = CountingReader(data)
    with pytest.raises(AudioTooLongError) as ei:
        decode(f, max_duration=1)
    assert ei.value.param == "file"
    assert f.bytes_read < len(data) / 3  # stopped long before the end of the 30 s file
    assert len(decode(data, max_duration=30).samples) == len(x)  # exactly at the bound is fine
    assert len(decode(data, max_duration=None)) == len(x)


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "aac"])
def test_max_duration_compressed(fmt):
    data = encode(Audio(tone(SR * 10), SR), fmt)
    with pytest.raises(AudioTooLongError):
        decode(data, max_duration=1)
    streamed = b"".join(stream_encode(fmt, tone(SR * 10), SR, sizes=(24000,)))
    with pytest.raises(AudioTooLongError):
        decode(streamed, max_duration=1.0)
