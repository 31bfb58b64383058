"""parakeet engine on tiny random NeMo graphs in onnx-asr's layout: parity with onnx-asr (TDT,
RNN-T, CTC), batched decoding, windows for long audio, word timestamps, features, errors."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_models import parakeet_dir

from voxbox.engines.asr.parakeet.decoding import Hypothesis, Vocab, words_of
from voxbox.engines.asr.parakeet.features import log_mel
from voxbox.engines.registry import load_asr
from voxbox.errors import (
    BadInputError,
    ModelNotFoundError,
    RequestCancelledError,
    UnsupportedOperationError,
)
from voxbox.runtime.catalog import Catalog
from voxbox.types import Audio, CancelToken

onnx_asr = pytest.importorskip("onnx_asr")
FRAME = 0.08


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.1 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(t))) + rng.normal(0, 0.05, t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parakeet")
    return {k: parakeet_dir(root / f"parakeet-{k}", kind=k, seed=3) for k in ("tdt", "rnnt", "ctc")}


@pytest.fixture(scope="module")
def tdt(dirs: dict[str, Path]):
    return load_asr("parakeet", str(dirs["tdt"]), device="cpu", threads=1)


@pytest.mark.parametrize("kind", ["tdt", "rnnt", "ctc"])
def test_same_tokens_and_times_as_onnx_asr(dirs: dict[str, Path], kind: str) -> None:
    wave = _wave(6.0, seed=1)
    eng = load_asr("parakeet", str(dirs[kind]), device="cpu", threads=1)
    assert eng.info.extra["head"] == kind
    peer = onnx_asr.load_model(f"nemo-conformer-{kind}", str(dirs[kind]),
                               providers=["CPUExecutionProvider"]).with_timestamps()
    ref = peer.recognize(wave, sample_rate=16000)
    hyp = eng.recognize([wave])[0]
    assert hyp.tokens, "the random model should emit something"
    assert [eng.vocab.pieces[t].replace("\u2581", " ") for t in hyp.tokens] == ref.tokens
    np.testing.assert_allclose(np.array(hyp.frames) * FRAME, ref.timestamps, atol=1e-6)
    segments, info = eng.transcribe(Audio(wave, 16000))
    text = " ".join(s.text for s in segments)
    assert text == " ".join(ref.text.replace("<unk>", "").split())
    assert info.duration == pytest.approx(6.0)


def test_batched_decoding_matches_one_by_one(tdt) -> None:
    waves = [_wave(s, seed=i) for i, s in enumerate((3.0, 5.5, 1.2, 4.0))]
    batched = tdt.recognize(waves)
    for wave, hyp in zip(waves, batched, strict=True):
        single = tdt.recognize([wave])[0]
        assert hyp.tokens == single.tokens and hyp.frames == single.frames and hyp.durations == single.durations


def test_long_audio_is_windowed_and_batched(tdt) -> None:
    audio = Audio(_wave(50.0, seed=5), 16000)
    one = list(tdt.transcribe(audio, word_timestamps=True, chunk_length=12, chunk_overlap=1, batch_size=1)[0])
    many, info = tdt.transcribe(audio, word_timestamps=True, chunk_length=12, chunk_overlap=1, batch_size=3)
    many = list(many)
    assert info.options["batch_size"] == 3 and info.options["chunk_length"] == 12
    assert [s.text for s in many] == [s.text for s in one]
    words = [w for s in many for w in (s.words or [])]
    assert words and words[-1].start > 36.0  # the last window (48-50 s) is transcribed too
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert all(0 <= w.start < w.end <= 50.0 + FRAME * 5 for w in words)
    assert [s.id for s in many] == list(range(len(many)))
    assert set(info.timings.as_dict()) >= {"features", "encode", "decode"}


def test_words_from_tdt_durations() -> None:
    vocab = Vocab({0: "<unk>", 1: "\u2581hello", 2: ",", 3: "\u2581wor", 4: "ld", 5: ".", 6: "<blk>"})
    hyp = Hypothesis(tokens=[1, 2, 3, 4, 5], frames=[2, 5, 7, 9, 9], durations=[3, 1, 2, 0, 1])
    words = words_of(hyp, vocab, FRAME, offset_s=10.0)
    assert [(w.word, w.start, w.end) for w in words] == [("hello,", 10.16, 10.48), ("world.", 10.56, 10.8)]
    assert vocab.blank == 6 and vocab.text(hyp.tokens) == "hello, world."


def test_resampled_input_and_segments(tdt) -> None:
    wave = _wave(4.0, seed=2)
    at16 = list(tdt.transcribe(Audio(wave, 16000))[0])
    at8 = list(tdt.transcribe(Audio(wave[::2], 8000))[0])
    assert at16 and at8
    assert all(s.words is None for s in at16)


def test_cancel_stops_the_segments(tdt) -> None:
    token = CancelToken()
    segments, _ = tdt.transcribe(Audio(_wave(40.0), 16000), chunk_length=10, batch_size=1, cancel=token)
    next(segments)
    token.cancel("test")
    with pytest.raises(RequestCancelledError):
        list(segments)


def test_features_match_onnx_asr_numpy_front_end() -> None:
    from onnx_asr.preprocessors.numpy_preprocessor import NemoPreprocessorNumpy

    waves = np.stack([_wave(2.0, 0), np.pad(_wave(1.3, 1), (0, 11200))])
    lens = np.array([32000, 20800])
    ref, ref_lens = NemoPreprocessorNumpy("nemo128")(waves.copy(), lens)
    out, out_lens = log_mel(waves, lens, 128)
    np.testing.assert_array_equal(out_lens, ref_lens)
    np.testing.assert_allclose(out, ref, atol=2e-4)
    torch = pytest.importorskip("torch")
    from voxbox.engines.asr.parakeet.features import log_mel_torch

    tout, _ = log_mel_torch(torch.from_numpy(waves), torch.from_numpy(lens), 128)
    np.testing.assert_allclose(tout.numpy(), out, atol=2e-3)


def test_bad_calls(tdt) -> None:
    audio = Audio(_wave(1.0), 16000)
    with pytest.raises(UnsupportedOperationError):
        tdt.transcribe(audio, task="translate")
    with pytest.raises(BadInputError) as info:
        tdt.transcribe(audio, batch_size=0)
    assert info.value.param == "batch_size"
    with pytest.raises(BadInputError) as info:
        tdt.transcribe(audio, beam_size=4)
    assert info.value.param == "beam_size"
    with pytest.raises(BadInputError):
        tdt.transcribe(Audio(np.zeros(0, np.float32), 16000))


def test_missing_files_are_named(tmp_path: Path, dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_asr("parakeet", str(tmp_path / "absent"))
    half = tmp_path / "half"
    shutil.copytree(dirs["tdt"], half)
    (half / "decoder_joint-model.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="decoder_joint-model.onnx is missing"):
        load_asr("parakeet", str(half))
    (half / "vocab.txt").unlink()
    with pytest.raises(ModelNotFoundError, match="vocab.txt"):
        load_asr("parakeet", str(half))
    with pytest.raises(ModelNotFoundError, match="int8"):
        load_asr("parakeet", str(dirs["tdt"]), quantization="int8")
    with pytest.raises(ModelNotFoundError, match="local model directory"):
        load_asr("parakeet", None)


def test_models_dir_folder_becomes_catalog_name(tmp_path: Path, dirs: dict[str, Path]) -> None:
    shutil.copytree(dirs["tdt"], tmp_path / "parakeet-tdt-0.6b")
    entry = Catalog.default(bundled=False, models_dir=tmp_path).resolve("parakeet-tdt-0.6b", "asr")
    assert entry.engine == "parakeet" and entry.model == str(tmp_path / "parakeet-tdt-0.6b")
