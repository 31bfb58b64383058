"""hibari and piper: the TTS engine contract (validation, voices, streaming, timings, errors)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from voxbox.engines.base import EncodedVoice, SpeechStream, TTSEngine
from voxbox.engines.registry import load_engine
from voxbox.errors import (
    BadInputError,
    DeviceError,
    ModelNotFoundError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.types import Audio

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")


@pytest.fixture(scope="module", params=["hibari", "piper"])
def tts(request):
    engine = load_engine(request.param)
    yield engine
    engine.close()


def test_protocol_and_info(tts):
    assert isinstance(tts, TTSEngine)
    info = tts.info
    assert info.task == "tts"
    assert info.sample_rate == (24000 if info.name == "hibari" else 22050)
    assert info.default_voice in info.voices
    assert info.max_concurrency >= 1
    comps = tts.components()
    assert comps and comps[0].params > 0


def test_stream_one_chunk_per_sentence(tts):
    text = "Hello there. How are you today? I am fine, thank you!"
    stream = tts.stream(text)
    assert isinstance(stream, SpeechStream)
    chunks = list(stream)
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.text for c in chunks] == ["Hello there.", "How are you today?", "I am fine, thank you!"]
    for c in chunks:
        assert c.sample_rate == tts.info.sample_rate
        assert c.samples.dtype == np.float32 and c.samples.ndim == 1
        assert 0.3 < c.duration < 5.0
        assert np.all(np.abs(c.samples) <= 1.0)
        assert np.sqrt(np.mean(c.samples ** 2)) > 0.01  # not silence
    assert set(stream.timings.as_dict()) == {"phonemize", "synthesize"}


def test_stage_timings_sum_within_wall(tts):
    t0 = time.perf_counter()
    stream = tts.stream("Timing check one. Timing check two, with a comma. And a third.")
    audio = stream.collect()
    wall = time.perf_counter() - t0
    timings = stream.timings.as_dict()
    assert timings["phonemize"] > 0 and timings["synthesize"] > 0
    assert sum(timings.values()) <= wall
    assert audio.duration > 1.0


def test_synthesize_matches_stream_length(tts):
    # deterministic settings, so the two calls must produce the same samples
    opts = {"seed": 1} if tts.info.name == "hibari" else {"noise_scale": 0.0, "noise_w": 0.0}
    text = "One sentence. Two sentences."
    a = tts.synthesize(text, speed=1.0, **opts)
    chunks = list(tts.stream(text, speed=1.0, **opts))
    assert isinstance(a, Audio) and a.sample_rate == tts.info.sample_rate
    assert len(chunks) == 2 and a.duration > 0.8
    assert len(a) == sum(len(c.samples) for c in chunks)
    assert np.array_equal(a.samples, np.concatenate([c.samples for c in chunks]))


def test_speed_changes_duration(tts):
    text = "The rain in Spain stays mainly in the plain."
    slow = tts.synthesize(text, speed=0.75).duration
    fast = tts.synthesize(text, speed=1.5).duration
    assert fast < slow * 0.8


@pytest.mark.parametrize("voice", OPENAI_VOICES)
def test_openai_voice_names_accepted(tts, voice):
    assert tts.resolve_voice(voice) in tts.info.voices


def test_openai_voice_map_complete(tts):
    import importlib

    mod = importlib.import_module(f"voxbox.engines.tts.{tts.info.name}")
    assert set(mod.OPENAI_VOICE_MAP) == set(OPENAI_VOICES)
    stream = tts.stream("Voice mapping works.", voice="nova")
    assert len(list(stream)) == 1


def test_unknown_voice(tts):
    with pytest.raises(VoiceNotFoundError) as ei:
        tts.stream("Hello.", voice="no-such-voice")
    assert ei.value.param == "voice"


@pytest.mark.parametrize("text", ["", "   ", "?!...", "x" * 5000, None, 12])
def test_bad_text_rejected_before_streaming(tts, text):
    with pytest.raises(BadInputError) as ei:
        tts.stream(text)
    assert ei.value.param == "text"


@pytest.mark.parametrize("speed", [0.0, 0.1, 5, "fast", float("nan")])
def test_bad_speed(tts, speed):
    with pytest.raises(BadInputError) as ei:
        tts.stream("Hello.", speed=speed)
    assert ei.value.param == "speed"


def test_unknown_option(tts):
    with pytest.raises(BadInputError):
        tts.stream("Hello.", bogus=1)


def test_no_cloning(tts):
    clip = Audio(np.zeros(16000, np.float32), 16000)
    with pytest.raises(UnsupportedOperationError):
        tts.encode_voice(clip)
    with pytest.raises(UnsupportedOperationError):
        tts.stream("Hello.", voice=EncodedVoice(("x", "y", "z"), None))


def test_close_stream_stops_generation(tts):
    stream = tts.stream("First. Second. Third. Fourth.")
    first = next(stream)
    assert first.index == 0
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)


def test_hibari_seed_is_reproducible():
    engine = load_engine("hibari")
    a = engine.synthesize("Reproducible noise.", seed=7).samples
    b = engine.synthesize("Reproducible noise.", seed=7).samples
    assert np.array_equal(a, b)


def test_hibari_cpu_only():
    with pytest.raises(DeviceError):
        load_engine("hibari", device="cuda")


def test_piper_local_model_path(tmp_path):
    import shutil

    from voxbox.models.bundled import piper_joe_paths

    onnx, cfg = piper_joe_paths()
    shutil.copyfile(cfg, tmp_path / "my-voice.onnx.json")
    (tmp_path / "my-voice.onnx").symlink_to(onnx)
    engine = load_engine("piper", str(tmp_path / "my-voice.onnx"))
    assert engine.info.model == "my-voice"
    assert engine.synthesize("A local voice.").duration > 0.3


def test_piper_missing_model():
    with pytest.raises(ModelNotFoundError):
        load_engine("piper", "/nonexistent/voice.onnx")
