"""Requested TTS speed is delivered (issue #22 item 11): engine-native where it is accurate,
PyAV atempo time-stretch for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from voxbox.audio.tempo import atempo_stages, split_speed, time_stretch
from voxbox.engines.registry import load_engine

TEXT = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, every single day."


def _tone(seconds: float, rate: int = 24000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int = 24000) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / x.size)


@pytest.mark.parametrize("factor, stages", [(1.5, 1), (2.0, 1), (0.5, 1), (4.0, 2), (0.25, 2), (3.0, 2), (0.3, 2)])
def test_atempo_stages_stay_in_range(factor: float, stages: int) -> None:
    got = atempo_stages(factor)
    assert len(got) == stages and all(0.5 - 1e-9 <= s <= 2.0 + 1e-9 for s in got)
    assert np.prod(got) == pytest.approx(factor)


@pytest.mark.parametrize("factor", [0.25, 0.5, 2.0, 4.0])
def test_time_stretch_changes_length_not_pitch(factor: float) -> None:
    x = _tone(2.0)
    y = time_stretch(x, 24000, factor)
    assert y.dtype == np.float32
    assert x.size / y.size == pytest.approx(factor, rel=0.02)
    assert _peak_hz(y) == pytest.approx(220.0, abs=3.0)


def test_time_stretch_identity_and_empty() -> None:
    x = _tone(0.1)
    assert time_stretch(x, 24000, 1.0) is not None and time_stretch(x, 24000, 1.0).size == x.size
    assert time_stretch(np.zeros(0, np.float32), 24000, 2.0).size == 0
    with pytest.raises(ValueError):
        atempo_stages(0.0)


def test_split_speed() -> None:
    assert split_speed(4.0, (0.25, 1.0)) == (1.0, 4.0)
    assert split_speed(0.5, (0.25, 1.0)) == (0.5, 1.0)
    native, stretch = split_speed(0.25, (1.0, 1.0))
    assert native * stretch == pytest.approx(0.25)


@pytest.fixture(scope="module", params=["hibari", "piper"])
def tts(request):
    engine = load_engine(request.param)
    kwargs = {"seed": 0} if request.param == "hibari" else {}
    base = engine.synthesize(TEXT, **kwargs).duration
    yield engine, base, kwargs
    engine.close()


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_requested_speed_is_met(tts, speed: float) -> None:
    engine, base, kwargs = tts
    stream = engine.stream(TEXT, speed=speed, **kwargs)
    audio = stream.collect()
    ratio = base / audio.duration
    assert ratio == pytest.approx(speed, rel=0.10), f"{engine.info.name}: asked {speed}, got {ratio:.2f}x"
    if speed > 1.0 or engine.info.name == "piper":
        assert "stretch" in stream.timings.as_dict()
