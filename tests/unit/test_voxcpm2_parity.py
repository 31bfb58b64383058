"""voxcpm2 against upstream's own ``VoxCPM2Model`` on a tiny random checkpoint in the upstream layout.

The checkpoint is written by voxbox's ``write_random_model`` and read by both sides: upstream's
``VoxCPM2Model.from_local`` (its pydantic config, ``LlamaTokenizerFast``, weight-normed AudioVAE)
and voxbox's loader. ``voxcpm/__init__.py`` imports the VoxCPM 1 model (torchaudio) and
``model/voxcpm2.py`` imports librosa, both for loading audio files only; this module puts empty
stand-ins for the two in ``sys.modules`` while it imports upstream (reference clips are passed to
upstream as latents from its own AudioVAE, so no file is loaded). The generation path upstream
runs is its real one, ``generate_with_prompt_cache`` (``retry_badcase`` off: a retry re-runs the
same loop).

Same seed, same inputs: the same patches, the same stopping step, audio equal to float rounding.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
for _mod in ("voxcpm", "einops", "pydantic"):
    if importlib.util.find_spec(_mod) is None:
        pytest.skip(
            f"UPSTREAM PARITY NOT TESTED: {_mod} is not installed (pip install --no-deps voxcpm einops pydantic)",
            allow_module_level=True,
        )

from voxbox.types import Audio  # noqa: E402

TEXT = "Hello there, this is a test."


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Toy-sized ops: one intra-op thread is faster (and fair to a shared 2-core box); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from voxbox.engines.tts.voxcpm2._random import write_random_model

    return write_random_model(tmp_path_factory.mktemp("voxcpm2") / "model", "tiny")


@pytest.fixture(scope="module")
def upstream(model_dir):
    import transformers  # noqa: F401 - its availability checks must run before the stand-ins exist

    mp = pytest.MonkeyPatch()
    for name in ("torchaudio", "librosa"):
        mp.setitem(sys.modules, name, types.ModuleType(name))
    try:
        v2 = importlib.import_module("voxcpm.model.voxcpm2")
        model = v2.VoxCPM2Model.from_local(str(model_dir), optimize=False, device="cpu")
        yield model
    finally:
        mp.undo()
        for name in [m for m in sys.modules if m == "voxcpm" or m.startswith("voxcpm.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def engine(model_dir):
    from voxbox.engines.registry import load_engine

    return load_engine("voxcpm2", str(model_dir), device="cpu")


def _upstream(up, seed: int, cache=None, **kw):
    torch.manual_seed(seed)
    wav, _, feats = up.generate_with_prompt_cache(target_text=TEXT, prompt_cache=cache, retry_badcase=False, **kw)
    return wav.reshape(-1).numpy(), feats


@pytest.mark.parametrize("kw", [dict(inference_timesteps=5, max_len=14), dict(inference_timesteps=10, cfg_value=1.5,
                                                                               min_len=5, max_len=12)])
def test_zero_shot_matches_upstream(upstream, engine, kw):
    ref, ref_feats = _upstream(upstream, 7, **kw)
    ours = engine.stream(TEXT, seed=7, timesteps=kw["inference_timesteps"], cfg_value=kw.get("cfg_value"),
                         min_len=kw.get("min_len"), max_len=kw["max_len"])
    audio = ours.collect().samples
    assert ours.details["patches"] == ref_feats.shape[0]  # same stopping step
    assert audio.shape == ref.shape and np.abs(ref).max() > 0
    np.testing.assert_allclose(audio, ref, atol=2e-4, rtol=0)


def test_reference_voice_matches_upstream(upstream, engine):
    t = np.arange(int(1.3 * 16000), dtype=np.float32) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)
    x = torch.from_numpy(wav)[None]
    patch_len = upstream.patch_size * upstream.chunk_size  # upstream _encode_wav after loading the file
    x = torch.nn.functional.pad(x, (0, patch_len - x.shape[1] % patch_len))
    with torch.inference_mode():
        feat = upstream.audio_vae.encode(x, 16000).cpu()
    ref_feat = feat.view(upstream.audio_vae.latent_dim, -1, upstream.patch_size).permute(1, 2, 0)
    voice = engine.encode_voice(Audio(wav, 16000))
    torch.testing.assert_close(voice.data["feats"], ref_feat, atol=1e-5, rtol=1e-4)
    ref, ref_feats = _upstream(upstream, 3, cache={"ref_audio_feat": ref_feat, "mode": "reference"},
                               inference_timesteps=5, max_len=12)
    ours = engine.stream(TEXT, voice=voice, seed=3, timesteps=5, max_len=12)
    audio = ours.collect().samples
    assert ours.details["patches"] == ref_feats.shape[0]
    np.testing.assert_allclose(audio, ref, atol=2e-4, rtol=0)


def test_streamed_windows_match_upstream_one_call_decode(upstream, engine):
    """voxbox decodes windows of patches as they come (causal state carried); upstream decodes the
    whole latent at once: the windows join to upstream's one-call audio."""
    ref, _ = _upstream(upstream, 11, inference_timesteps=4, min_len=9, max_len=9)
    chunks = [c.samples for c in engine.stream(TEXT, seed=11, timesteps=4, min_len=9, max_len=9,
                                               first_window_patches=1, window_patches=3)]
    assert len(chunks) == 1 + 3  # 9 patches: 1, then 3, 3, 2
    np.testing.assert_allclose(np.concatenate(chunks), ref, atol=2e-4, rtol=0)


def test_tokenizer_matches_upstream(upstream, engine):
    for text in (TEXT, "你好世界，我们的 the test!", "Numbers 123 and (parens)."):
        assert engine.tokenizer(text) == list(upstream.text_tokenizer(text))
