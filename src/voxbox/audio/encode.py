"""Encode mono float32 audio to the OpenAI speech output formats with PyAV (no ffmpeg binary).

One code path: ``StreamEncoder`` turns blocks of samples into bytes as they are produced (for
chunked HTTP responses); ``encode`` and ``encode_stream`` are thin consumers of it.

==========  =====================================  ================  ========================
format      what is written                        MIME type         rate written
==========  =====================================  ================  ========================
``wav``     RIFF/WAVE, PCM s16le, mono             ``audio/wav``     input rate
``pcm``     raw s16le, mono, no header             ``audio/pcm``     input rate
``flac``    native FLAC, 16-bit, mono              ``audio/flac``    input rate
``mp3``     MPEG audio layer III (libmp3lame)      ``audio/mpeg``    input rate if mp3 allows
``opus``    Ogg/Opus (libopus)                     ``audio/ogg``     8/12/16/24/48 kHz, else 48
``aac``     AAC-LC in ADTS frames                  ``audio/aac``     input rate if AAC allows
``m4a``     AAC-LC in an MP4 container (files)     ``audio/mp4``     input rate if AAC allows
==========  =====================================  ================  ========================

Writing to a file (``StreamEncoder(..., file=f)`` with a seekable ``f``) still encodes chunk by
chunk, and at ``close()`` the muxer seeks back to finish its headers: WAV sizes, FLAC STREAMINFO
totals and MD5, the mp3 Xing/LAME header, the MP4 ``moov`` index (``m4a`` exists only for files).

Streaming specifics (what a client sees when concatenating the chunks):

- ``wav`` streams one header with the RIFF and data sizes set to 0xFFFFFFFF ("unknown length",
  as OpenAI does), then PCM. The whole-file ``encode`` writes the real sizes.
- ``mp3`` streamed has no Xing/LAME header (it would need a seek back), so decoders cannot trim
  the encoder delay: the decoded audio is ``N + 1152`` samples rounded up to whole mp3 frames
  (576 samples at <= 24 kHz, 1152 above), with the extra silence at the start. The whole-file
  ``encode`` writes a LAME header, and decodes to exactly ``N`` samples in libavcodec.
- ``aac`` (ADTS, whole-file or streamed) cannot signal priming: it decodes to
  ``1024 * ceil((N + 1024) / 1024)`` samples, 1024 of them priming at the start.
- ``opus`` and ``flac`` decode to exactly ``N`` samples (Ogg pre-skip and end trimming, FLAC is
  lossless). Opus always decodes at 48 kHz whatever rate it was encoded from. Ogg pages are
  flushed every ~100 ms when streaming, so an Opus stream lags the input by at most that much.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator

import av
import numpy as np

from voxbox.audio.resample import StreamResampler, resample, to_mono
from voxbox.errors import BadInputError, UnsupportedFormatError
from voxbox.types import Audio

__all__ = [
    "DEFAULT_BITRATES",
    "FILE_FORMATS",
    "FORMATS",
    "MIME_TYPES",
    "StreamEncoder",
    "encode",
    "encode_stream",
    "to_s16le",
    "wav_header",
]

#: Output formats, as named by OpenAI's ``response_format``.
FORMATS: tuple[str, ...] = ("wav", "pcm", "flac", "mp3", "opus", "aac")

#: Formats a file can hold (the muxer seeks back at the end): the OpenAI formats plus MP4/M4A.
FILE_FORMATS: tuple[str, ...] = (*FORMATS, "m4a")

#: Content-Type for each output format.
MIME_TYPES: dict[str, str] = {
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}

#: Bits per second used when ``bitrate`` is not given (mono speech).
DEFAULT_BITRATES: dict[str, int] = {"mp3": 64_000, "aac": 64_000, "opus": 32_000}

_PARAM = "response_format"
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: fmt -> (libavformat muxer, encoder, sample format given to the encoder)
_AV_FORMATS: dict[str, tuple[str, str, str]] = {
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "opus": ("ogg", "libopus", "flt"),
    "aac": ("adts", "aac", "fltp"),
    "m4a": ("ipod", "aac", "fltp"),
}
#: Bitrates the encoders accept for mono (libopus rejects the rest); others clamp themselves.
_BITRATE_LIMITS: dict[str, tuple[int, int]] = {"opus": (6_000, 256_000)}
#: Ogg page length while streaming (microseconds): bounds how long Opus output lags the input.
_OGG_STREAM_PAGE_US = 100_000


def to_s16le(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] -> little-endian signed 16-bit PCM bytes (clipped, NaN -> 0)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.rint(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, n_samples: int | None = None, *, channels: int = 1) -> bytes:
    """44-byte PCM s16le WAV header; ``n_samples=None`` writes the streaming form (sizes 0xFFFFFFFF)."""
    block_align = 2 * channels
    if n_samples is None:
        riff_size = data_size = 0xFFFFFFFF
    else:
        data_size = n_samples * block_align
        if data_size + 36 > 0xFFFFFFFF:
            raise BadInputError("audio too long for a WAV file (over 4 GiB of PCM)", param=_PARAM)
        riff_size = 36 + data_size
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def _check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    f = str(fmt).lower().strip() if isinstance(fmt, str) else fmt
    if f not in allowed:
        raise UnsupportedFormatError(
            f"unsupported audio format {fmt!r}; choose one of: {', '.join(allowed)}", param=_PARAM
        )
    return f


def _as_mono_float(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    a = to_mono(a) if a.ndim == 2 else np.asarray(a, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(a, -1.0, 1.0).astype(np.float32, copy=False)


def _codec_rate(fmt: str, rate: int) -> int:
    """The rate the codec will run at for an input at ``rate`` (nearest allowed rate above)."""
    if fmt == "opus":
        return rate if rate in _OPUS_RATES else 48000
    if fmt in ("mp3", "aac", "m4a"):
        codec = av.Codec(_AV_FORMATS[fmt][1], "w")
        allowed = sorted(codec.audio_rates or ())
        if not allowed or rate in allowed:
            return rate
        higher = [r for r in allowed if r >= rate]
        return higher[0] if higher else allowed[-1]
    return rate


class _Sink:
    """Write-only, non-seekable byte sink for the muxer; ``take()`` hands out what was written."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class StreamEncoder:
    """Incremental encoder: ``feed`` mono float32 blocks at ``sample_rate``, then ``close`` once.

    ``feed`` returns the encoded bytes that are ready (possibly ``b""``); ``close`` flushes the
    rest. The concatenation of everything returned is a complete, decodable file of ``fmt``.
    ``output_rate`` resamples on the way (default: keep ``sample_rate``); codecs with a fixed set
    of rates may still adjust it: ``codec_rate`` is the rate actually encoded and ``decoded_rate``
    the rate a decoder returns (48 kHz for Opus). Not thread-safe: one encoder per response.
    """

    def __init__(
        self,
        fmt: str,
        sample_rate: int,
        *,
        bitrate: int | None = None,
        output_rate: int | None = None,
        file: BinaryIO | None = None,
        _whole_file: bool = False,
    ) -> None:
        self.fmt = _check_format(fmt, FILE_FORMATS if file is not None else FORMATS)
        self._file = file
        if int(sample_rate) <= 0:
            raise BadInputError(f"sample rate must be positive, got {sample_rate}", param="sample_rate")
        if output_rate is not None and int(output_rate) <= 0:
            raise BadInputError(f"sample rate must be positive, got {output_rate}", param="sample_rate")
        if bitrate is not None and int(bitrate) <= 0:
            raise BadInputError(f"bitrate must be positive, got {bitrate}", param="bitrate")
        self.mime_type = MIME_TYPES[self.fmt]
        self.sample_rate = int(sample_rate)
        target = int(output_rate) if output_rate else self.sample_rate
        self.codec_rate = _codec_rate(self.fmt, target)
        self.decoded_rate = 48000 if self.fmt == "opus" else self.codec_rate
        self.bitrate = int(bitrate) if bitrate else DEFAULT_BITRATES.get(self.fmt)
        self._whole_file = _whole_file
        self._closed = False
        self._n_samples = 0  # samples at codec_rate handed to the codec so far
        self._resampler = (
            StreamResampler(self.sample_rate, self.codec_rate) if self.codec_rate != self.sample_rate else None
        )
        self._pcm_parts: list[bytes] = []  # wav whole-file: kept until close() knows the size
        self._container = None
        self._stream = None
        self._sink: _Sink | io.BytesIO | None = None
        self._pending = b""
        if self.fmt in _AV_FORMATS:
            self._open_av()
        elif self.fmt == "wav" and not _whole_file:
            self._pending = wav_header(self.codec_rate, None)
        self._file_start = file.tell() if file is not None else 0

    # -- PyAV muxer ----------------------------------------------------------------------------
    def _open_av(self) -> None:
        muxer, codec_name, sample_fmt = _AV_FORMATS[self.fmt]
        # Whole-file output goes to a seekable buffer so muxers can finish their headers (FLAC
        # STREAMINFO totals, the mp3 Xing/LAME gapless header); streams go to a one-way sink.
        self._sink = self._file if self._file is not None else io.BytesIO() if self._whole_file else _Sink()
        copts = {"flush_packets": "1", "metadata_header_padding": "0"}
        if self.fmt == "mp3":
            copts["id3v2_version"] = "0"
        if self.fmt == "opus" and not self._whole_file:
            copts["page_duration"] = str(_OGG_STREAM_PAGE_US)
        try:
            container = av.open(self._sink, mode="w", format=muxer, container_options=copts)
        except av.FFmpegError as exc:  # pragma: no cover - depends on the libav build
            raise UnsupportedFormatError(f"this build cannot write {self.fmt}: {exc}", param=_PARAM) from exc
        try:
            stream = container.add_stream(codec_name, rate=self.codec_rate, layout="mono")
            ctx = stream.codec_context
            ctx.format = sample_fmt
            if self.bitrate and self.fmt in DEFAULT_BITRATES:
                lo, hi = _BITRATE_LIMITS.get(self.fmt, (1, 1 << 30))
                ctx.bit_rate = min(max(self.bitrate, lo), hi)
            ctx.time_base = Fraction(1, self.codec_rate)
            container.start_encoding()  # writes the header now: first bytes go out at once
        except av.FFmpegError as exc:
            container.close()
            raise UnsupportedFormatError(
                f"cannot encode {self.fmt} at {self.codec_rate} Hz: {exc}", param=_PARAM
            ) from exc
        except Exception:
            container.close()
            raise
        self._container, self._stream = container, stream

    def _encode_av(self, x: np.ndarray | None) -> None:
        assert self._container is not None and self._stream is not None
        if x is None:
            packets = self._stream.encode(None)
        else:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x).reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self.codec_rate
            frame.time_base = Fraction(1, self.codec_rate)
            frame.pts = self._n_samples
            packets = self._stream.encode(frame)
        self._container.mux(packets)

    def _take(self) -> bytes:
        out, self._pending = self._pending, b""
        if isinstance(self._sink, _Sink):
            out += self._sink.take()
        if self._file is not None and out:
            self._file.write(out)  # raw formats (wav, pcm) written to the file as they come
            return b""
        return out

    # -- public --------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> bytes:
        """Encode a block of mono samples (float in [-1, 1], or int16); return bytes ready now."""
        if self._closed:
            raise RuntimeError("StreamEncoder.feed() after close()")
        x = _as_mono_float(samples)
        if self._resampler is not None:
            x = self._resampler.push(x)
        self._write(x)
        return self._take()

    def _write(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        if self._container is not None:
            self._encode_av(x)
        elif self._whole_file:
            self._pcm_parts.append(to_s16le(x))
        else:
            self._pending += to_s16le(x)
        self._n_samples += x.size

    def close(self) -> bytes:
        """Flush the encoder and muxer; return the last bytes (the whole file for ``encode``)."""
        if self._closed:
            return b""
        if self._resampler is not None:
            self._write(self._resampler.flush())
        self._closed = True
        if self._container is not None:
            try:
                self._encode_av(None)
            finally:
                self._container.close()
                self._container = None
            if self._file is not None:
                return b""
            if isinstance(self._sink, io.BytesIO):
                return self._sink.getvalue()
            return self._take()
        if self._file is not None:
            self._take()
            if self.fmt == "wav":  # now the sizes are known: patch the streaming header
                end = self._file.tell()
                self._file.seek(self._file_start)
                self._file.write(wav_header(self.codec_rate, self._n_samples))
                self._file.seek(end)
            return b""
        if self._whole_file:
            data = b"".join(self._pcm_parts)
            self._pcm_parts.clear()
            if self.fmt == "wav":
                return wav_header(self.codec_rate, len(data) // 2) + data
            return data
        return self._take()

    def abort(self) -> None:
        """Release the encoder without flushing (e.g. the client went away)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - best effort on an abandoned stream
                pass
            self._container = None
        self._pcm_parts.clear()

    def __enter__(self) -> "StreamEncoder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def encode(audio: Audio, fmt: str, *, sample_rate: int | None = None, bitrate: int | None = None) -> bytes:
    """Encode a whole ``Audio`` to ``fmt`` (one of ``FORMATS``); ``sample_rate`` resamples first.

    Raises ``UnsupportedFormatError`` (``param="response_format"``) for an unknown format.
    """
    f = _check_format(fmt)
    samples, rate = audio.samples, audio.sample_rate
    if sample_rate is not None and int(sample_rate) != rate:
        if int(sample_rate) <= 0:
            raise BadInputError(f"sample rate must be positive, got {sample_rate}", param="sample_rate")
        samples, rate = resample(samples, rate, int(sample_rate)), int(sample_rate)
    enc = StreamEncoder(f, rate, bitrate=bitrate, _whole_file=True)
    head = enc.feed(samples)
    return head + enc.close()


def encode_stream(
    chunks: Iterable[np.ndarray],
    fmt: str,
    sample_rate: int,
    *,
    bitrate: int | None = None,
    output_rate: int | None = None,
) -> Iterator[bytes]:
    """Encode an iterable of sample blocks; yields non-empty byte chunks as they are ready.

    Arguments are validated now (before the first chunk is pulled), so a bad ``fmt`` fails before
    a streaming response has started.
    """
    enc = StreamEncoder(fmt, sample_rate, bitrate=bitrate, output_rate=output_rate)

    def gen() -> Iterator[bytes]:
        ok = False
        try:
            for chunk in chunks:
                data = enc.feed(np.asarray(getattr(chunk, "samples", chunk)))
                if data:
                    yield data
            tail = enc.close()
            ok = True
            if tail:
                yield tail
        finally:
            if not ok:
                enc.abort()

    return gen()
