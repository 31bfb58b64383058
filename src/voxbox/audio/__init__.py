"""Audio I/O on PyAV (libav* in-process, no ffmpeg binary): decode any common format, resample,
encode the OpenAI speech output formats whole or as a stream.

Public API (pinned by ``tests/unit/test_audio_io.py``)::

    decode(source, *, sample_rate=None, max_duration=DEFAULT_MAX_DURATION) -> Audio
    probe_duration(source) -> float | None
    encode(audio, fmt, *, sample_rate=None, bitrate=None) -> bytes
    StreamEncoder(fmt, sample_rate, *, bitrate=None).feed(samples) -> bytes / .close() -> bytes
    encode_stream(chunks, fmt, sample_rate) -> Iterator[bytes]
    FORMATS, MIME_TYPES, to_s16le(samples), wav_header(rate, n)
    resample(samples, src, dst), resample_audio(audio, dst), StreamResampler, to_mono
"""

from voxbox.audio.decode import DEFAULT_MAX_DURATION, AudioSource, decode, probe_duration
from voxbox.audio.encode import (
    DEFAULT_BITRATES,
    FORMATS,
    MIME_TYPES,
    StreamEncoder,
    encode,
    encode_stream,
    to_s16le,
    wav_header,
)
from voxbox.audio.resample import StreamResampler, resample, resample_audio, to_mono

__all__ = [
    "DEFAULT_BITRATES",
    "DEFAULT_MAX_DURATION",
    "FORMATS",
    "MIME_TYPES",
    "AudioSource",
    "StreamEncoder",
    "StreamResampler",
    "decode",
    "encode",
    "encode_stream",
    "probe_duration",
    "resample",
    "resample_audio",
    "to_mono",
    "to_s16le",
    "wav_header",
]
