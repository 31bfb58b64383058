"""The shared core's torch (device) log-mel vs transformers' WhisperFeatureExtractor (the reference features)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from voxbox.engines.asr.whisper.features import CHUNK_FRAMES, CHUNK_SAMPLES, mel_filters  # noqa: E402
from voxbox.engines.asr.whisper.features import log_mel_torch as log_mel  # noqa: E402


def _wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_reference(n_mels):
    from transformers import WhisperFeatureExtractor

    ref = WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T  # (n_mels, 201)
    ours = mel_filters(n_mels)
    assert ours.shape == ref.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_feature_extractor(moonshine_assets, n_mels):
    from transformers import WhisperFeatureExtractor

    torch.set_num_threads(1)
    x = _wav(moonshine_assets / "beckett.wav")
    ref = WhisperFeatureExtractor(feature_size=n_mels)(x, sampling_rate=16000, return_tensors="np").input_features[0]
    padded = np.zeros(CHUNK_SAMPLES, np.float32)
    padded[: len(x)] = x
    ours = log_mel(torch.from_numpy(padded), n_mels)[:, :CHUNK_FRAMES].numpy()
    assert ours.shape == ref.shape == (n_mels, CHUNK_FRAMES)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    # the batch path clamps each row's dynamic range on its own
    both = log_mel(torch.from_numpy(np.stack([padded, padded * 0.01])), n_mels)[..., :CHUNK_FRAMES]
    np.testing.assert_allclose(both[0].numpy(), ref, rtol=0, atol=1e-4)
    assert not np.allclose(both[1].numpy(), ref, atol=1e-2)
