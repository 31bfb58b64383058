"""The integer-PCM WAV path of ``decode`` (stdlib ``wave`` + numpy) gives exactly what libav gives,
within the same bounds, and leaves everything else to libav."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from voxbox.audio.decode import _decode_pcm_wav, decode
from voxbox.errors import AudioTooLongError, ImplausibleAudioError

sys.path.insert(0, str(Path(__file__).parent))
from test_audio_io import wav_bytes  # noqa: E402

RNG = np.random.default_rng(7)


def make_wav(width: int, channels: int, rate: int, frames: int) -> bytes:
    return wav_bytes(RNG.uniform(-1, 1, (frames, channels)), rate, width, channels)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize(("rate", "target"), [(16000, 16000), (44100, 16000), (22050, None), (8000, 24000)])
def test_same_samples_as_libav(width: int, channels: int, rate: int, target: int | None) -> None:
    data = make_wav(width, channels, rate, rate * 2 + 333)
    fast = decode(data, sample_rate=target)
    via_libav = decode(data, sample_rate=target, format="wav")  # a named demuxer skips the PCM path
    assert fast.sample_rate == via_libav.sample_rate == (target or rate)
    assert fast.samples.dtype == np.float32
    np.testing.assert_array_equal(fast.samples, via_libav.samples)


def test_taken_for_pcm_and_not_for_the_rest(tmp_path: Path) -> None:
    pcm = make_wav(2, 1, 16000, 16000)
    assert _decode_pcm_wav(io.BytesIO(pcm), 16000, None, 8000, 384000) is not None
    # float WAV (format tag 3), which the stdlib reader refuses: libav decodes it
    import av

    path = tmp_path / "f.wav"
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_f32le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.full((1, 1600), 0.25, np.float32), format="flt", layout="mono")
        frame.rate = 16000
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    f = io.BytesIO(path.read_bytes())
    assert _decode_pcm_wav(f, 16000, None, 8000, 384000) is None and f.tell() == 0
    assert np.allclose(decode(path, sample_rate=16000).samples, 0.25)
    # a data chunk that claims more than the bytes hold (truncated upload): libav's result
    truncated = pcm[: len(pcm) - 1000]
    assert _decode_pcm_wav(io.BytesIO(truncated), 16000, None, 8000, 384000) is None
    assert len(decode(truncated, sample_rate=16000).samples) == (len(truncated) - 44) // 2


def test_file_objects_and_paths_keep_working(tmp_path: Path) -> None:
    data = make_wav(2, 2, 48000, 4800)
    p = tmp_path / "a.wav"
    p.write_bytes(data)
    want = decode(data, sample_rate=16000, format="wav").samples
    np.testing.assert_array_equal(decode(p, sample_rate=16000).samples, want)
    f = io.BytesIO(b"junk" + data)
    f.seek(4)  # decoding starts at the file object's position
    np.testing.assert_array_equal(decode(f, sample_rate=16000).samples, want)


def test_same_bounds() -> None:
    data = make_wav(2, 1, 16000, 16000 * 3)
    with pytest.raises(AudioTooLongError):
        decode(data, sample_rate=16000, max_duration=2.0)
    low = make_wav(2, 1, 4000, 4000)
    with pytest.raises(ImplausibleAudioError):
        decode(low, sample_rate=16000)
