"""kokoro engine on tiny random graphs in kokoro-onnx's layout: loading, parity with kokoro-onnx,
voice mixing, streaming, word timestamps, the PyTorch checkpoint path, and the error paths."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_models import VOICES, kokoro_dir, kokoro_torch_dir

from voxbox.engines.base import EncodedVoice
from voxbox.engines.registry import get_spec, load_tts
from voxbox.errors import (
    BadInputError,
    ModelNotFoundError,
    RequestCancelledError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.runtime.catalog import Catalog
from voxbox.types import CancelToken

pytest.importorskip("phonemizer")
pytest.importorskip("espeakng_loader")

TEXT = "Hello there, how are you doing today? I want to go to the store of a friend."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kokoro_dir(tmp_path_factory.mktemp("kokoro") / "kokoro", timed=True)


@pytest.fixture(scope="module")
def engine(model_dir: Path):
    return load_tts("kokoro", str(model_dir), device="cpu", threads=1)


@pytest.fixture(scope="module")
def peer(model_dir: Path):
    kokoro_onnx = pytest.importorskip("kokoro_onnx")
    return kokoro_onnx.Kokoro(str(model_dir / "kokoro-v1.0.onnx"), str(model_dir / "voices-v1.0.bin"))


def test_loads_voices_and_reports_capabilities(engine) -> None:
    assert engine.info.voices == tuple(sorted(VOICES))
    assert engine.info.default_voice == "af_heart"
    assert engine.info.supports_word_timestamps
    assert engine.info.extra["backend"] == "onnx"
    assert engine.info.extra["execution_provider"] == "CPUExecutionProvider"
    assert engine.info.sample_rate == 24000


@pytest.mark.parametrize("speed", [1.0, 1.3])
def test_same_phonemes_and_audio_as_kokoro_onnx(engine, peer, speed: float) -> None:
    sentence = "Hello there, how are you doing today?"
    assert engine.phonemize(sentence, "en-us") == peer.tokenizer.phonemize(sentence, "en-us")
    ref, sr = peer.create(sentence, "af_bella", speed=speed, trim=False, sentence_pause=0, clause_pause=0)
    out = engine.synthesize(sentence, "af_bella", speed=speed)
    assert sr == out.sample_rate
    assert out.samples.shape == ref.shape
    np.testing.assert_array_equal(out.samples, ref)


def test_voice_mix_is_the_weighted_mean(engine, peer) -> None:
    sentence = "The quick brown fox jumps over the lazy dog."
    mix = (2 * peer.voices["af_bella"] + peer.voices["af_sky"]) / 3
    ref, _ = peer.create(sentence, mix.astype(np.float32), trim=False, sentence_pause=0, clause_pause=0)
    out = engine.synthesize(sentence, "af_bella(2)+af_sky(1)")
    np.testing.assert_allclose(out.samples, ref, atol=1e-4)
    # a different weighting is a different voice (negative control)
    other = engine.synthesize(sentence, "af_bella(1)+af_sky(2)")
    assert other.samples.shape != out.samples.shape or not np.allclose(other.samples, out.samples)


def test_word_timestamps_follow_the_phoneme_timings_of_kokoro_onnx(engine, peer) -> None:
    sentence = "Hello there, how are you doing today?"
    _, _, timings = peer.create_timed(sentence, "af_heart", trim=False, sentence_pause=0, clause_pause=0)
    stream = engine.stream(sentence, "af_heart")
    audio = stream.collect()
    words = stream.details["words"]
    assert [w.word for w in words] == ["Hello", "there", "how", "are", "you", "doing", "today"]
    phonemes = stream.details["phonemes"][0]
    starts = [i for i, ch in enumerate(phonemes) if ch != " " and (i == 0 or phonemes[i - 1] == " ")]
    for w, i in zip(words, starts, strict=True):
        assert w.start == pytest.approx(timings[i].start, abs=1e-3)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    assert words[-1].end <= audio.duration + 1e-6


def test_streams_one_chunk_per_sentence_with_running_word_times(engine) -> None:
    stream = engine.stream(TEXT)
    chunks = list(stream)
    assert [c.text for c in chunks] == ["Hello there, how are you doing today?",
                                        "I want to go to the store of a friend."]
    whole = engine.synthesize(TEXT)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), whole.samples)
    words = stream.details["words"]
    first_len = chunks[0].duration
    later = [w for w in words if w.word in ("want", "store", "friend")]
    assert later and all(w.start >= first_len for w in later)
    # "of a" is one group in espeak-ng's output; both words still get a non-empty span
    of, a = [w for w in words if w.word in ("of", "a")]
    assert of.end > of.start and a.end > a.start and of.end <= a.start
    assert set(stream.timings.as_dict()) >= {"phonemize", "synthesize", "align"}


def test_two_workers_give_the_same_stream_in_order(model_dir: Path, engine) -> None:
    two = load_tts("kokoro", str(model_dir), device="cpu", threads=1, workers=2)
    assert two.info.extra["workers"] == 2
    text = TEXT + " The quick brown fox jumps over the lazy dog. It is late."
    ref = engine.stream(text)
    ref_chunks = list(ref)
    par = two.stream(text)
    par_chunks = list(par)
    assert [c.text for c in par_chunks] == [c.text for c in ref_chunks]
    for a, b in zip(par_chunks, ref_chunks, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
    assert par.details["words"] == ref.details["words"]
    # closing early leaves no work behind that breaks the next call
    early = two.stream(text)
    next(early)
    early.close()
    assert two.synthesize("Hello there.").duration > 0


def test_long_sentence_is_cut_into_passes(engine) -> None:
    # digits read out make a short sentence longer than the model's 510-phoneme context
    long = "Call " + "7654321 or 1234567 or 9876543 or 3456789 or 8765432 or 2345678 or 5678901 or 4567890" + " today."
    stream = engine.stream(long)
    chunks = list(stream)
    assert len(chunks) == 1
    assert len(stream.details["phonemes"][0]) > 510
    words = stream.details["words"]
    # words are the spoken words: the text package spells the digits out before phonemisation
    assert [w.word for w in words][:3] == ["Call", "seven", "million"] and words[-1].word == "today"
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert words[-1].end <= chunks[0].duration + 1e-6


def test_cancel_stops_between_chunks(engine) -> None:
    token = CancelToken()
    stream = engine.stream(TEXT, cancel=token)
    next(stream)
    token.cancel("test")
    with pytest.raises(RequestCancelledError):
        next(stream)


def test_openai_voice_names_and_language_option(engine) -> None:
    assert engine.resolve_voice("coral")[0] == "af_heart"
    british = engine.stream("Hello there.", "af_heart", language="en-gb")
    british.collect()
    assert british.details["language"] == "en-gb"
    assert engine.stream("Hola amigo.", "af_heart", language="es").details["language"] == "es"


@pytest.mark.parametrize("voice, exc", [
    ("nobody", VoiceNotFoundError),
    ("af_bella(2)+nobody", VoiceNotFoundError),
    ("af_bella(-1)", BadInputError),
    ("af_bella((2)", BadInputError),
    ("", BadInputError),
])
def test_bad_voices(engine, voice: str, exc: type) -> None:
    with pytest.raises(exc) as info:
        engine.stream("Hello.", voice)
    assert info.value.param == "voice"


def test_bad_calls(engine) -> None:
    with pytest.raises(UnsupportedOperationError):
        engine.stream("Hello.", EncodedVoice(("kokoro", "m", "x"), None))
    with pytest.raises(BadInputError) as info:
        engine.stream("Hello.", language="klingon")
    assert info.value.param == "language"
    with pytest.raises(BadInputError) as info:
        engine.stream("Hello.", seed=3)
    assert info.value.param == "seed"
    with pytest.raises(BadInputError):
        engine.stream("   ")
    with pytest.raises(BadInputError):
        engine.stream("Hello.", speed=9)


def test_v1_graph_without_durations(tmp_path: Path, peer) -> None:
    d = kokoro_dir(tmp_path / "v1", timed=False)
    eng = load_tts("kokoro", str(d), device="cpu")
    assert not eng.info.supports_word_timestamps
    stream = eng.stream("Hello there.")
    audio = stream.collect()
    assert audio.duration > 0 and "words" not in stream.details


def test_missing_files_are_named(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_tts("kokoro", str(tmp_path / "absent"))
    only_graph = tmp_path / "only_graph"
    only_graph.mkdir()
    shutil.copy(model_dir / "kokoro-v1.0.onnx", only_graph)
    with pytest.raises(ModelNotFoundError, match="voices"):
        load_tts("kokoro", str(only_graph))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no Kokoro model"):
        load_tts("kokoro", str(empty))
    with pytest.raises(ModelNotFoundError, match="local model directory"):
        load_tts("kokoro", None)
    pth_only = tmp_path / "pth_only"
    pth_only.mkdir()
    (pth_only / "kokoro-v1_0.pth").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_tts("kokoro", str(pth_only))


def test_models_dir_folder_becomes_catalog_name(model_dir: Path) -> None:
    cat = Catalog.default(bundled=False, models_dir=model_dir.parent)
    entry = cat.resolve("kokoro", "tts")
    assert entry.engine == "kokoro" and entry.model == str(model_dir)
    assert "kokoro" in get_spec("kokoro").aliases


@pytest.mark.slow
def test_pytorch_checkpoint_with_upstream_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if __import__("importlib").util.find_spec("kokoro") is None:
        pytest.skip("kokoro package not installed (pip install --no-deps kokoro)")
    d = kokoro_torch_dir(tmp_path_factory.mktemp("kokoro_pt") / "kokoro")
    eng = load_tts("kokoro", str(d), device="cpu", threads=2)
    assert eng.info.extra["backend"] == "torch" and eng.info.voices == ("af_bella", "af_heart")
    stream = eng.stream("Hi there.", "af_bella(1)+af_heart(1)")
    audio = stream.collect()
    words = stream.details["words"]
    assert [w.word for w in words] == ["Hi", "there"]
    # the checkpoint's durations place the words inside the audio, 600 samples per frame
    assert 0 < words[0].start < words[0].end <= words[1].start < words[1].end <= audio.duration + 1e-6
    assert len(audio) % 600 == 0
