"""Encoding to a seekable file: streamed chunk by chunk, headers finished at close (issue #22 item 6)."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest

from voxbox.audio.encode import FILE_FORMATS, StreamEncoder
from voxbox.errors import UnsupportedFormatError

RATE = 24000


def _tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _write(path, fmt: str, x: np.ndarray) -> None:
    with open(path, "w+b") as f:
        enc = StreamEncoder(fmt, RATE, file=f)
        for block in np.array_split(x, 7):  # several feeds, as a stream would
            assert enc.feed(block) == b""  # everything goes to the file
        assert enc.close() == b""


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_file_format_decodes_with_its_length(tmp_path, fmt):
    if fmt == "pcm":
        pytest.skip("raw PCM has no container to check")
    x = _tone()
    path = tmp_path / f"t.{fmt}"
    _write(path, fmt, x)
    with av.open(str(path)) as c:
        n = sum(fr.samples for fr in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    assert abs(n / rate - len(x) / RATE) < 0.15, (fmt, n, rate)


def test_wav_sizes_and_flac_streaminfo_are_written(tmp_path):
    x = _tone()
    wav = tmp_path / "t.wav"
    _write(wav, "wav", x)
    data = wav.read_bytes()
    riff, = struct.unpack("<I", data[4:8])
    size, = struct.unpack("<I", data[40:44])
    assert size == 2 * len(x) and riff == len(data) - 8  # not the streaming 0xFFFFFFFF
    flac = tmp_path / "t.flac"
    _write(flac, "flac", x)
    raw = flac.read_bytes()
    assert raw[:4] == b"fLaC"
    info = raw[8:8 + 34]  # STREAMINFO follows the 4-byte block header
    bits = int.from_bytes(info[10:18], "big")
    total_samples = bits & ((1 << 36) - 1)
    md5 = info[18:34]
    assert total_samples == len(x)  # players can show the length
    assert md5 != bytes(16)


def test_m4a_is_an_mp4_container_and_needs_a_file(tmp_path):
    path = tmp_path / "t.m4a"
    _write(path, "m4a", _tone())
    assert path.read_bytes()[4:8] == b"ftyp"  # MP4, not raw ADTS
    with av.open(str(path)) as c:
        assert "mp4" in c.format.name and c.streams.audio[0].codec_context.name == "aac"
    with pytest.raises(UnsupportedFormatError):
        StreamEncoder("m4a", RATE)  # a stream cannot hold MP4 (its index is written at the end)
