"""torch-whisper on real weights: the bundled faster-whisper tiny.en (CTranslate2, float16) read back
into an HF checkpoint by ``voxbox.convert.ct2_reader``; transcripts of the bundled human recordings
must match faster-whisper's greedy transcripts (WER <= 0.02)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
faster_whisper = pytest.importorskip("faster_whisper")

from voxbox.errors import BadInputError, UnsupportedOperationError  # noqa: E402
from voxbox.models.bundled import whisper_tiny_en_dir  # noqa: E402
from voxbox.text import wer  # noqa: E402
from voxbox.types import Audio  # noqa: E402

CLIPS = ("beckett.wav", "two_cities.wav")


def _audio(path) -> Audio:
    with wave.open(str(path)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        return Audio(x, w.getframerate())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from voxbox.convert.ct2_reader import write_hf_checkpoint

    return write_hf_checkpoint(whisper_tiny_en_dir(), tmp_path_factory.mktemp("tiny_en_hf"))


@pytest.fixture(scope="module")
def engine(checkpoint):
    from voxbox.engines.registry import load_engine

    torch.set_num_threads(1)  # 2 shared cores: threads only add contention
    return load_engine("torch-whisper", str(checkpoint), device="cpu")


@pytest.fixture(scope="module")
def reference(moonshine_assets):
    from faster_whisper import WhisperModel

    from voxbox.audio.resample import resample_audio

    fw = WhisperModel(str(whisper_tiny_en_dir()), device="cpu", compute_type="float32", cpu_threads=1)
    out = {}
    for name in CLIPS:
        samples = resample_audio(_audio(moonshine_assets / name), 16000).samples  # two_cities is 48 kHz
        segs, _ = fw.transcribe(samples, beam_size=1, language="en")
        out[name] = " ".join(s.text.strip() for s in segs)
    return out


def test_reader_gives_transformers_layout(checkpoint):
    import json

    from safetensors import safe_open
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = json.loads((checkpoint / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["vocab_size"]) == (384, 4, 4, 51864)
    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(WhisperConfig(**cfg))
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert got == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_transcripts_match_faster_whisper(engine, reference, moonshine_assets, name):
    segments, info = engine.transcribe(_audio(moonshine_assets / name), beam_size=1)
    segments = list(segments)
    text = " ".join(s.text.strip() for s in segments)
    assert wer(reference[name], text) <= 0.02, (reference[name], text)
    assert info.language == "en" and info.duration > 5
    assert {"features", "encode", "decode"} <= set(info.timings.as_dict())
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and all(s.start <= s.end <= info.duration + 0.05 for s in segments)


@pytest.mark.slow
def test_batched_windows_and_beam_search(engine, reference, moonshine_assets):
    segments, _ = engine.transcribe(_audio(moonshine_assets / "two_cities.wav"), batch_size=4)
    segments = list(segments)
    text = " ".join(s.text.strip() for s in segments)
    # windows are cut every 30 s without seeking, so words at the cuts may differ
    assert wer(reference["two_cities.wav"], text) <= 0.1, text
    assert segments[-1].end > 40 and [s.id for s in segments] == list(range(len(segments)))
    beam, _ = engine.transcribe(_audio(moonshine_assets / "beckett.wav"), beam_size=3)
    assert wer(reference["beckett.wav"], " ".join(s.text for s in beam)) <= 0.1


def test_resamples_other_rates(engine, moonshine_assets):
    from voxbox.audio.resample import resample

    a = _audio(moonshine_assets / "beckett.wav")
    segs, info = engine.transcribe(Audio(resample(a.samples, 16000, 8000), 8000), without_timestamps=True)
    assert "fail" in " ".join(s.text for s in segs).lower()
    assert abs(info.duration - a.duration) < 0.05


def test_validates_before_decoding(engine, moonshine_assets):
    a = _audio(moonshine_assets / "beckett.wav")
    with pytest.raises(UnsupportedOperationError):
        engine.transcribe(a, task="translate")  # English-only model
    with pytest.raises(BadInputError):
        engine.transcribe(a, word_timestamps="yes")
    with pytest.raises(BadInputError):
        engine.transcribe(a, task="summarize")
    with pytest.raises(BadInputError):
        engine.transcribe(a, language="de")
    with pytest.raises(BadInputError):
        engine.transcribe(a, no_such_option=1)
    with pytest.raises(BadInputError):
        engine.transcribe(a, beam_size=0)
    with pytest.raises(BadInputError):
        engine.transcribe(Audio(np.zeros(0, np.float32), 16000))
    assert engine.info.name == "torch-whisper" and engine.info.languages == ("en",)
    assert engine.components()[0].params > 30_000_000
