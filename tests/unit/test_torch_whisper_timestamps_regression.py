"""Regression: torch-whisper with timestamps on real Whisper base weights, beckett.wav (~10 s).

A window shorter than 30 s is zero-padded *log-mel* (openai-whisper's and faster-whisper's transcribe
loops, transformers' long-form generate), not the log-mel of audio padded with silence (transformers'
short-form feature extractor). On this clip the two inputs flip the token after <|0.00|>
(" Ever" vs " Never", logits 16.38 vs 16.22), so parity with transformers is checked on the same
zero-padded features, and the batched path must pad its last window the same way as the sequential one.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from voxbox.audio import decode  # noqa: E402
from voxbox.errors import EngineUnavailableError  # noqa: E402

OPTS = dict(language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from voxbox.convert.ct2_reader import write_hf_checkpoint
    from voxbox.models.bundled import whisper_base_dir

    try:
        src = whisper_base_dir()
    except EngineUnavailableError as exc:
        pytest.skip(str(exc))
    return write_hf_checkpoint(src, tmp_path_factory.mktemp("base_hf"))


@pytest.fixture(scope="module")
def engine(checkpoint):
    from voxbox.engines.asr.torch_whisper.engine import load

    torch.set_num_threads(1)
    return load(str(checkpoint), device="cpu", dtype="float32", use_graphs=False)


@pytest.fixture(scope="module")
def audio(moonshine_assets):
    return decode(moonshine_assets / "beckett.wav", sample_rate=16000)


def _first_tokens(engine, audio, **kw):
    segs, _ = engine.transcribe(audio, **OPTS, **kw)
    return list(segs)[0].tokens


@pytest.mark.slow
def test_timestamped_tokens_match_transformers_on_reference_features(engine, checkpoint, audio):
    from transformers import WhisperForConditionalGeneration

    from voxbox.engines.asr.whisper.features import CHUNK_FRAMES, CHUNK_SAMPLES
    from voxbox.engines.asr.whisper.features import log_mel_torch as log_mel

    x = torch.from_numpy(np.ascontiguousarray(audio.samples, dtype=np.float32))
    mel = log_mel(x, engine.model.dims.n_mels, padding=CHUNK_SAMPLES)
    content = mel.shape[-1] - CHUNK_FRAMES
    feats = torch.nn.functional.pad(mel[:, :content], (0, CHUNK_FRAMES - content))[None]
    hf = WhisperForConditionalGeneration.from_pretrained(str(checkpoint)).eval()
    with torch.inference_mode():
        ref = hf.generate(feats, return_timestamps=True, language="en", task="transcribe")[0].tolist()
    sot = engine.tokenizer.sot
    ref = ref[ref.index(sot) + 3 :] if sot in ref else ref  # drop <|startoftranscript|><|en|><|transcribe|>
    ours = _first_tokens(engine, audio)
    assert ours[0] == engine.tokenizer.timestamp_begin
    assert ours == ref[: len(ours)], (ours, ref)
    assert engine.tokenizer.decode(ours[1:2]) == " Ever"  # the clip: "Ever tried. Ever failed."


@pytest.mark.slow
def test_batched_last_window_is_padded_like_sequential(engine, audio):
    assert _first_tokens(engine, audio, batch_size=2) == _first_tokens(engine, audio)
