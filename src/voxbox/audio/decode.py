"""Decode any common audio file to mono float32 with PyAV (libav* in-process, no ffmpeg binary).

``decode`` reads wav (8/16/24/32-bit int, 32/64-bit float), flac, mp3, ogg/vorbis, ogg/opus,
m4a/aac, adts, webm/opus and whatever else the bundled libavformat knows, down-mixes to mono
(channel mean) and resamples on the fly. Plain integer-PCM WAV, the common upload, skips libav: the
stdlib ``wave`` reader and numpy convert it in large blocks (same samples, same bounds, a fiftieth
of the CPU time and of the time holding the GIL).

Memory is bounded by the input, not by what its header claims (``voxbox.audio.limits``): before
decoding, the container header is checked — a sample rate outside 8–384 kHz or a declared length
that the input's bytes cannot hold for its codec is refused (``ImplausibleAudioError``, HTTP 400),
and a declared length over ``max_duration`` is refused (``AudioTooLongError``, 413). While
decoding, output stops as soon as it passes ``max_duration`` seconds or what the bytes can hold.
Decoded samples go into one growing array (no list of small chunks concatenated at the end), so
the peak is about the output itself and freed memory goes back to the OS. Every other failure
becomes an ``AudioDecodeError`` (one line, ``param="file"``) raised ``from`` the PyAV exception.

Paths are opened by Python and handed to libavformat as a file object, so a "path" can never
be interpreted as an ffmpeg protocol URL (``http:``, ``concat:``...).
"""

from __future__ import annotations

import contextlib
import io
import os
import wave
from typing import BinaryIO, Iterator, Union

import av
import numpy as np

from voxbox.audio.limits import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, DecodeGuard
from voxbox.audio.resample import StreamResampler
from voxbox.errors import AudioDecodeError, UnsupportedFormatError
from voxbox.types import Audio

__all__ = ["DEFAULT_MAX_DURATION", "AudioSource", "decode", "probe_duration"]

#: Longest input ``decode`` accepts by default, in seconds (2 hours).
DEFAULT_MAX_DURATION = 7200.0

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

_PARAM = "file"
#: Give up when this many packets in a row fail to decode and nothing decoded yet.
_MAX_LEADING_BAD_PACKETS = 32

# Integer sample formats -> scale to [-1, 1). Float formats pass through.
_INT_SCALE = {
    "u8": 128.0,
    "s16": 32768.0,
    "s32": 2147483648.0,
}


def _fail(message: str, exc: BaseException | None = None) -> AudioDecodeError:
    detail = ""
    if exc is not None:
        reason = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
        reason = " ".join(str(reason or exc).split()) or type(exc).__name__
        detail = f" ({reason})"
    return AudioDecodeError(f"{message}{detail}", param=_PARAM)


@contextlib.contextmanager
def _input_file(source: AudioSource) -> Iterator[BinaryIO]:
    """Yield a readable binary file object for ``source``; reject empty input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise _fail("empty audio input (0 bytes)")
        yield io.BytesIO(data)
        return
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise _fail(f"audio file not found: {path}") from exc
        except OSError as exc:
            raise _fail(f"cannot open audio file {path}", exc) from exc
        with f:
            if os.fstat(f.fileno()).st_size == 0:
                raise _fail(f"empty audio file (0 bytes): {path}")
            yield f  # type: ignore[misc]
        return
    if not hasattr(source, "read"):
        raise _fail(f"cannot decode audio from a {type(source).__name__}; pass a path, bytes or a binary file object")
    f = source
    seekable = False
    with contextlib.suppress(Exception):
        seekable = bool(f.seekable()) if hasattr(f, "seekable") else hasattr(f, "seek")
    if not seekable:
        # libavformat probes by seeking back; a pipe-like object is read into memory first
        # (uploads are size-limited by the server before they get here).
        data = f.read()
        if not data:
            raise _fail("empty audio input (0 bytes)")
        yield io.BytesIO(data)
        return
    pos = f.tell()
    first = f.read(1)
    f.seek(pos)
    if not first:
        raise _fail("empty audio input (0 bytes)")
    yield f


def _input_size(f: BinaryIO) -> int:
    """Bytes from the current position to the end (the position is kept)."""
    pos = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return max(0, end - pos)


#: Only inputs this small get the raw ADTS/mp3 retry (libavformat probes longer ones reliably).
_SNIFF_MAX_BYTES = 16384


def _sniff_raw_stream(f: BinaryIO, start: int) -> str | None:
    """Demuxer for a tiny headerless ADTS/mp3 stream (a couple of frames) that libavformat's
    probe rejects as too uncertain; ``None`` when the input does not start like one."""
    try:
        size = f.seek(0, io.SEEK_END) - start
        f.seek(start)
        head = f.read(3)
        f.seek(start)
    except (OSError, ValueError):
        return None
    if size > _SNIFF_MAX_BYTES or len(head) < 3 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0 and (b2 >> 2) & 0x0F < 13:  # ADTS sync, layer 0, valid rate index
        return "aac"
    # MPEG audio sync, layer I-III, bitrate index not free/bad, valid rate index
    if b1 & 0xE0 == 0xE0 and b1 & 0x06 and b1 & 0x18 != 0x08 and 0 < b2 >> 4 < 15 and (b2 >> 2) & 3 != 3:
        return "mp3"
    return None


_OPEN_ERRORS = (av.FFmpegError, ValueError, OSError, EOFError, UnicodeError)


@contextlib.contextmanager
def _open_container(source: AudioSource, fmt: str | None) -> Iterator[tuple[av.container.InputContainer, int]]:
    """Yield the opened container and the input's size in bytes."""
    with _input_file(source) as f, _open_av(f, fmt) as opened:
        yield opened


@contextlib.contextmanager
def _open_av(f: BinaryIO, fmt: str | None) -> Iterator[tuple[av.container.InputContainer, int]]:
    start = f.tell()
    nbytes = _input_size(f)
    try:
        container = av.open(f, mode="r", format=fmt, metadata_errors="ignore")
    except _OPEN_ERRORS as exc:
        fallback = _sniff_raw_stream(f, start) if fmt is None else None
        if fallback is None:
            raise _fail("not a recognised audio file", exc) from exc
        try:
            container = av.open(f, mode="r", format=fallback, metadata_errors="ignore")
        except _OPEN_ERRORS:
            raise _fail("not a recognised audio file", exc) from exc
    try:
        yield container, nbytes
    finally:
        container.close()


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    streams = container.streams.audio
    if not streams:
        raise _fail("no audio stream found in the input")
    stream = streams[0]
    # libavformat leaves no codec context when it has no decoder for the stream (an unknown WAV
    # format tag, 0 bits per sample, WAVE_FORMAT_EXTENSIBLE without its extension...).
    if stream.codec_context is None:
        raise UnsupportedFormatError(
            "the audio codec is unknown or its format header is malformed (unsupported format tag, "
            "bits per sample or channel layout)", param=_PARAM)
    return stream


def _declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """Seconds the headers declare (``None`` if they do not say)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration / av.time_base)
    return None




class _SampleBuffer:
    """Decoded output in one float32 array that grows in place (``ndarray.resize``: realloc, which
    for big blocks is mremap). One large allocation instead of thousands of small chunks: no
    concatenation doubling the peak at the end, and the memory is returned to the OS when freed.
    ``capacity`` is reserved lazily (``np.empty`` touches no pages)."""

    def __init__(self, capacity: int) -> None:
        self._a = np.empty(max(1, capacity), np.float32)
        self.size = 0

    def append(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        need = self.size + x.size
        if need > self._a.size:
            self._a.resize(max(need, self._a.size * 2), refcheck=False)
        self._a[self.size : need] = x
        self.size = need

    def take(self) -> np.ndarray:
        a, self._a = self._a, np.empty(0, np.float32)
        a.resize(self.size, refcheck=False)
        return a


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Any decoded frame -> (n,) float32 in [-1, 1], channel mean."""
    fmt = frame.format
    channels = frame.layout.nb_channels or 1
    base = fmt.packed.name if fmt.is_planar else fmt.name  # e.g. "s16p" -> "s16"
    try:
        a = frame.to_ndarray()
    except ValueError:
        # Sample formats numpy cannot hold directly (s64): let libswresample convert.
        conv = av.AudioResampler(format="fltp")
        out = [f.to_ndarray() for f in conv.resample(frame)]
        a = np.concatenate(out, axis=1) if out else np.zeros((channels, 0), np.float32)
        base = "flt"
        fmt = av.AudioFormat("fltp")
    if base in _INT_SCALE:
        x = a.astype(np.float32)
        if base == "u8":
            x -= 128.0
        x *= 1.0 / _INT_SCALE[base]
    else:
        x = a.astype(np.float32, copy=False)
    if fmt.is_planar:
        x = x.reshape(channels, -1) if x.ndim == 2 else x.reshape(1, -1)
        return x[0].copy() if x.shape[0] == 1 else x.mean(axis=0, dtype=np.float32)
    x = x.reshape(-1)
    if channels == 1:
        return x.copy() if x.base is not None else x
    return x.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def decode(
    source: AudioSource,
    *,
    sample_rate: int | None = None,
    max_duration: float | None = DEFAULT_MAX_DURATION,
    format: str | None = None,  # noqa: A002 - mirrors av.open
    min_source_rate: int = MIN_SAMPLE_RATE,
    max_source_rate: int = MAX_SAMPLE_RATE,
) -> Audio:
    """Decode ``source`` (path, bytes or binary file object) to mono float32 ``Audio``.

    ``sample_rate``: resample to this rate (default: the file's own rate).
    ``max_duration``: seconds; a header declaring more is refused before decoding, and decoding
    stops with ``AudioTooLongError`` as soon as more than this has been decoded (``None``
    disables this bound; the bytes-vs-duration bound stays).
    ``format``: force a libavformat demuxer (e.g. ``"aac"`` for raw ADTS), normally probed.
    ``min_source_rate``/``max_source_rate``: sample rates (Hz) accepted in the input.

    Raises ``AudioDecodeError`` for empty, truncated, garbage or non-audio input and for audio
    that decodes to zero samples; ``ImplausibleAudioError`` (a subclass) for headers or output
    that cannot be true (rate out of range, more audio than the bytes can hold).
    """
    if sample_rate is not None and int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if max_duration is not None and max_duration <= 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")

    with _input_file(source) as f:
        if format is None:
            pcm = _decode_pcm_wav(f, sample_rate, max_duration, min_source_rate, max_source_rate)
            if pcm is not None:
                return pcm
        with _open_av(f, format) as (container, nbytes):
            stream = _audio_stream(container)
            cc = stream.codec_context
            guard = DecodeGuard(nbytes=nbytes, max_duration=max_duration,
                                min_rate=min_source_rate, max_rate=max_source_rate)
            declared = _declared_duration(container, stream)
            guard.check_header(cc.name, cc.sample_rate, cc.channels, declared)
            out_rate = int(sample_rate) if sample_rate else None
            out = _SampleBuffer(guard.output_capacity(declared, out_rate or cc.sample_rate or None))
            out_rate, first_error = _decode_into(container, stream, guard, out, out_rate)
            if out.size == 0 or out_rate is None:
                if first_error is not None:
                    raise _fail("no audio could be decoded from the input", first_error) from first_error
                raise _fail("no audio samples in the input (empty or truncated file)")
            return Audio(out.take(), out_rate)


#: libav's names of the PCM sample widths the stdlib ``wave`` module reads (bytes per sample).
_WAV_CODECS = {1: "pcm_u8", 2: "pcm_s16le", 3: "pcm_s24le", 4: "pcm_s32le"}
#: Frames converted per numpy pass on the PCM-WAV path (bounds the temporary arrays).
_WAV_BLOCK_FRAMES = 1 << 18


#: More channels than this go to libav (which refuses implausible layouts with its own message).
_WAV_MAX_CHANNELS = 8


def _one_fmt_chunk(f: BinaryIO, start: int, data_at: int) -> bool:
    """Whether exactly one ``fmt `` chunk precedes the data (the stdlib reader keeps the last of
    several, libav the first: such a file goes to libav, so both paths agree on every input)."""
    pos, fmts = start + 12, 0
    for _ in range(64):
        if pos + 8 > data_at:
            break
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8 or head[:4] == b"data":
            break
        fmts += head[:4] == b"fmt "
        size = int.from_bytes(head[4:], "little")
        pos += 8 + size + (size & 1)
    else:
        return False
    return fmts == 1


def _pcm_block(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian integer PCM bytes -> (n,) float32 mono in [-1, 1), as the libav path gives."""
    if width == 1:
        x = np.frombuffer(raw, np.uint8).astype(np.float32)
        x -= 128.0
        x *= 1.0 / 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # sign from the top byte, as libav's s32
        x = v.astype(np.float32)
        x *= 1.0 / 2147483648.0
    else:
        x = np.frombuffer(raw, "<i2" if width == 2 else "<i4").astype(np.float32)
        x *= 1.0 / _INT_SCALE["s16" if width == 2 else "s32"]
    if channels == 1:
        return x
    return x.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _decode_pcm_wav(f: BinaryIO, sample_rate: int | None, max_duration: float | None, min_rate: int,
                    max_rate: int) -> Audio | None:
    """A plain integer-PCM WAV, the common upload, read with the stdlib ``wave`` module and converted
    in a few large numpy blocks instead of libav's ~4 KB packets, each a trip through Python (under
    many concurrent uploads that per-packet work, holding the GIL, was most of a server's CPU time).
    The same bounds (``DecodeGuard``) and the same resampler as the libav path apply, and the output
    is the same. ``None`` (position restored) for anything else: float or compressed WAV, a data
    chunk that does not fit the bytes (streamed or truncated files), other containers."""
    start = f.tell()
    head = f.read(12)
    f.seek(start)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    nbytes = _input_size(f)
    try:
        w = wave.open(f, "rb")  # type: ignore[arg-type]  # a file object it did not open: not closed by it
    except Exception:  # noqa: BLE001 - anything the stdlib parser trips on goes to libav, which says why
        f.seek(start)
        return None
    try:
        channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        data_at = f.tell()  # wave leaves the file at the data chunk's samples
        data_end = data_at + frames * channels * width
        if (width not in _WAV_CODECS or not 1 <= channels <= _WAV_MAX_CHANNELS or frames <= 0 or rate <= 0
                or data_end > start + nbytes or not _one_fmt_chunk(f, start, data_at)):
            f.seek(start)
            return None
        f.seek(data_at)
        guard = DecodeGuard(nbytes=nbytes, max_duration=max_duration, min_rate=min_rate, max_rate=max_rate)
        guard.check_header(_WAV_CODECS[width], rate, channels, frames / rate)
        out_rate = int(sample_rate) if sample_rate else rate
        out = _SampleBuffer(guard.output_capacity(frames / rate, out_rate))
        resampler = StreamResampler(rate, out_rate)
        left = frames
        while left > 0:
            n = min(left, _WAV_BLOCK_FRAMES)
            try:
                raw = w.readframes(n)
            except Exception:  # noqa: BLE001 - a chunk layout the stdlib reader rejects: libav decides
                f.seek(start)
                return None
            got = len(raw) // (channels * width)
            if got == 0:
                break
            guard.add(got, rate)  # bounds errors (VoxboxError) are the answer, as on the libav path
            out.append(resampler.push(_pcm_block(raw[: got * channels * width], width, channels)))
            left -= got
        out.append(resampler.flush())
    finally:
        w.close()
    if out.size == 0:
        raise _fail("no audio samples in the input (empty or truncated file)")
    return Audio(out.take(), out_rate)


def _decode_into(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, guard: DecodeGuard,
                 out: _SampleBuffer, out_rate: int | None) -> tuple[int | None, BaseException | None]:
    """Demux and decode ``stream`` into ``out`` within ``guard``'s bounds, resampling to ``out_rate``
    (``None``: the first frame's rate). Returns the output rate and the first packet error seen."""
    resampler: StreamResampler | None = None
    bad_packets = 0
    first_error: BaseException | None = None
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:  # a corrupt packet: skip it, like ffmpeg does
                first_error = first_error or exc
                bad_packets += 1
                if guard.decoded_samples == 0 and bad_packets >= _MAX_LEADING_BAD_PACKETS:
                    raise _fail("audio data could not be decoded", exc) from exc
                continue
            for frame in frames:
                if frame.samples == 0 or not frame.sample_rate:
                    continue
                rate = int(frame.sample_rate)
                guard.add(frame.samples, rate)  # raises before the frame is kept
                out_rate = out_rate or rate
                if resampler is None or resampler.src_rate != rate:
                    if resampler is not None:  # the rate changed mid-stream
                        out.append(resampler.flush())
                    resampler = StreamResampler(rate, out_rate)
                out.append(resampler.push(_frame_to_mono(frame)))
    except av.FFmpegError as exc:
        raise _fail("audio data is corrupt or truncated", exc) from exc
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        raise _fail("audio data could not be decoded", exc) from exc
    if resampler is not None:
        out.append(resampler.flush())
    return out_rate, first_error


def probe_duration(source: AudioSource, *, format: str | None = None) -> float | None:  # noqa: A002
    """Duration in seconds from the container's headers, without decoding; ``None`` if unknown.

    Cheap, but only as honest as the headers (a streamed WAV or a VBR mp3 without a Xing header
    gives an estimate). Raises ``AudioDecodeError`` if the input is not a recognised audio file.
    A file object's position is restored.
    """
    pos = None
    if hasattr(source, "read") and hasattr(source, "tell"):
        with contextlib.suppress(Exception):
            pos = source.tell()  # type: ignore[union-attr]
    try:
        with _open_container(source, format) as (container, _):
            return _declared_duration(container, _audio_stream(container))
    finally:
        if pos is not None:
            with contextlib.suppress(Exception):
                source.seek(pos)  # type: ignore[union-attr]
