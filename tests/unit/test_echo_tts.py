"""echo-tts engine on a tiny random model of the upstream classes, saved in the upstream layout.

The model directory is written by ``voxbox.engines.tts.echo._random.write_random_model`` (the
same helper the GPU benchmark uses at real shapes) and loaded through the real loader. Audio is
kept short (32 latent frames = 1.5 s) because the CPU decoder still runs 44.1 kHz convolutions.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("einops")
if __import__("importlib").util.find_spec("echo_tts") is None:
    pytest.skip("echo-tts is not installed (pip install --no-deps echo-tts)", allow_module_level=True)

from voxbox.engines.base import EncodedVoice, TTSEngine  # noqa: E402
from voxbox.errors import BadInputError, UnsupportedOperationError  # noqa: E402
from voxbox.types import Audio  # noqa: E402

SEQ = 32  # latent frames per test call (2048 samples each)
TEXT = "Hello there, this is a test."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from voxbox.engines.tts.echo._random import write_random_model

    return write_random_model(tmp_path_factory.mktemp("echo") / "model", "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    from voxbox.engines.registry import load_engine

    return load_engine("echo-tts", str(model_dir), device="cpu")


def test_upstream_package_init_is_not_executed(engine):
    # the engine must not need torchaudio: echo_tts/__init__.py (which imports it) never runs
    assert "echo_tts.inference" not in sys.modules or "torchaudio" in sys.modules
    assert isinstance(engine, TTSEngine)
    assert [c.name for c in engine.components()] == ["text_encoder", "speaker_encoder", "dit", "autoencoder"]
    assert all(c.params > 0 for c in engine.components())


def test_synthesize_two_steps(engine):
    stream = engine.stream(TEXT, steps=2, sequence_length=SEQ)
    audio = stream.collect()
    assert audio.sample_rate == 44100
    assert np.isfinite(audio.samples).all() and audio.samples.std() > 0
    frames = stream.details["speech_frames"]
    assert 0 < frames <= SEQ and stream.details["sequence_length"] == SEQ
    assert len(audio.samples) == frames * 2048
    t = stream.timings.as_dict()
    assert {"text_encode", "speaker_encode", "sample", "decode"} <= set(t)


def test_hybrid_placement_two_dtypes(model_dir):
    from voxbox.engines.tts import echo

    eng = echo.load(
        model_dir,
        device="cpu",
        placement={
            "dit": "cpu:bfloat16", "text_encoder": ("cpu", "bfloat16"),
            "speaker_encoder": {"device": "cpu", "dtype": "float16"}, "autoencoder": "cpu:float32",
        },
    )
    assert eng.info.extra["placement"]["dit"] == ("cpu", "bfloat16")
    assert eng.info.extra["placement"]["autoencoder"] == ("cpu", "float32")
    assert eng.dit.in_w.dtype == torch.bfloat16 and next(eng.ae.parameters()).dtype == torch.float32
    clip = Audio(np.sin(np.arange(44100, dtype=np.float32) * 0.05) * 0.3, 44100)
    audio = eng.synthesize(TEXT, voice=clip, steps=2, sequence_length=SEQ)
    assert np.isfinite(audio.samples).all() and 0 < len(audio.samples) <= SEQ * 2048


def test_streaming_chunks_match_single_decode(engine):
    whole = engine.stream(TEXT, steps=2, sequence_length=SEQ, seed=3, chunk_frames=SEQ)
    one = [c.samples for c in whole]
    assert len(one) == 1
    chunks = list(engine.stream(TEXT, steps=2, sequence_length=SEQ, seed=3, chunk_frames=4, max_chunk_frames=8))
    assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
    assert len(chunks[0].samples) == 4 * 2048  # first audio after 4 latent frames
    joined = np.concatenate([c.samples for c in chunks])
    assert joined.shape == one[0].shape
    np.testing.assert_allclose(joined, one[0], atol=1e-5, rtol=0)


def test_speaker_latent_cache(engine):
    clip = Audio(np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1, 16000)
    hits = engine.voice_cache_hits
    v1 = engine.encode_voice(clip)
    assert isinstance(v1, EncodedVoice) and v1.key[0] == "echo-tts" and len(v1.key[2]) == 64
    assert v1.data["latent"].shape == (40, 80)  # 2 s at 44.1 kHz = 43 frames, cut to a multiple of 4
    v2 = engine.encode_voice(Audio(clip.samples.copy(), 16000))
    assert v2 is v1 and engine.voice_cache_hits == hits + 1
    stream = engine.stream(TEXT, voice=clip, steps=2, sequence_length=SEQ)  # Audio voice goes through the cache
    audio = stream.collect()
    assert engine.voice_cache_hits == hits + 2 and np.isfinite(audio.samples).all()
    assert engine.stream(TEXT, voice=v1.key[2], steps=2, sequence_length=SEQ).collect().samples.size > 0


def test_repeated_voice_reuses_its_speaker_keys_values(engine):
    clip = Audio(np.random.default_rng(3).standard_normal(16000 * 2).astype(np.float32) * 0.1, 16000)
    voice = engine.encode_voice(clip)
    engine._speaker_kv.pop(voice.key, None)
    first = engine.synthesize(TEXT, voice=voice, steps=2, sequence_length=SEQ, seed=5)
    kept = engine._speaker_kv[voice.key]
    assert kept[1] == 40 // 4 and kept[2] == 16  # 10 valid speaker tokens padded to one bucket
    again = engine.synthesize(TEXT, voice=voice, steps=2, sequence_length=SEQ, seed=5)
    assert engine._speaker_kv[voice.key] is kept  # the second call computed nothing new
    np.testing.assert_array_equal(first.samples, again.samples)


def test_sequence_buckets_follow_text_length(engine):
    from voxbox.engines.tts.echo import SEQ_BUCKETS, sequence_bucket

    short, medium, long = "Hi there. " * 6, "A medium sentence with some words. " * 6, "Long text goes on and on. " * 21
    got = [sequence_bucket(t) for t in (short, medium, long)]
    assert got == sorted(got) and got[0] == SEQ_BUCKETS[0] and got[-1] == 640
    stream = engine.stream(short, steps=1, chunk_frames=4)
    first = next(stream)
    stream.close()
    assert stream.details["sequence_length"] == SEQ_BUCKETS[0] and len(first.samples) == 4 * 2048
    stream = engine.stream(short, steps=1, sequence_length=640, chunk_frames=4)  # per-call override
    next(stream)
    stream.close()
    assert stream.details["sequence_length"] == 640


def test_validation_before_streaming(engine):
    with pytest.raises(BadInputError):
        engine.stream("   ")
    with pytest.raises(BadInputError):
        engine.stream(TEXT, nonsense=1)
    with pytest.raises(BadInputError):
        engine.stream(TEXT, sequence_length=1000)
    with pytest.raises(BadInputError):
        engine.stream(TEXT, preset="no-such-preset")
    with pytest.raises(BadInputError):
        engine.stream("x" * 900)
    with pytest.raises(UnsupportedOperationError):
        engine.stream(TEXT, speed=1.5)
    assert {"default", "fast", "balanced"} <= set(engine.info.extra["presets"])


def test_sampler_matches_upstream(model_dir, monkeypatch):
    """voxbox's fused, bucketed sampler against upstream's sample_euler_cfg_independent_guidances (float32).

    Only this test imports upstream's inference.py, with an empty torchaudio module standing in
    (it is used there for file I/O only), to get the reference sampler.
    """
    from voxbox.engines.tts import echo
    from voxbox.engines.tts.echo._load import load_dit, resolve_files

    monkeypatch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
    for name in [m for m in sys.modules if m == "echo_tts" or m.startswith("echo_tts.")]:
        monkeypatch.delitem(sys.modules, name)
    import echo_tts.inference as I

    for name in [m for m in sys.modules if m == "echo_tts" or m.startswith("echo_tts.")]:
        del sys.modules[name]  # imported with the stand-in: forget them (I keeps what it needs)

    cpu = (torch.device("cpu"), torch.float32)
    ref_model, _ = load_dit(resolve_files(model_dir).dit, {"dit": cpu, "text_encoder": cpu, "speaker_encoder": cpu})
    eng = echo.load(model_dir, device="cpu")
    kw = dict(num_steps=4, cfg_scale_text=3.0, cfg_scale_speaker=8.0, cfg_min_t=0.5, cfg_max_t=1.0,
              truncation_factor=0.8, rescale_k=None, rescale_sigma=None, speaker_kv_scale=None,
              speaker_kv_max_layers=None, speaker_kv_min_t=None, sequence_length=SEQ)
    tokens, mask = I.get_text_input_ids_and_mask([TEXT], max_length=768, device="cpu")
    with torch.inference_mode():
        ref = I.sample_euler_cfg_independent_guidances(
            ref_model, torch.zeros((1, 4, 80)), torch.zeros((1, 4), dtype=torch.bool), tokens, mask, 5, **kw)
    call = eng._parse(TEXT, None, None, dict(steps=4, seed=5, sequence_length=SEQ))
    from voxbox.types import StageTimings

    ours = eng._latent(call, StageTimings())
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_fused_decoder_walk_matches_upstream_forward(engine):
    # _fastdec.decode (padding written by Snake, strided crop, padding=0 convs) == upstream's Decoder.forward
    from voxbox.engines.tts.echo import _fastdec

    gen = torch.Generator().manual_seed(0)
    z = torch.randn((1, engine.ae.decoder.model[0].conv.in_channels, 24), generator=gen)
    with torch.inference_mode():
        ref = engine.ae.decoder(z)
        fast = _fastdec.decode(engine.ae.decoder, z, use_triton=False)
        padded = _fastdec.snake_pad(z, torch.full((1, z.shape[1], 1), 0.7), 5, use_triton=False)
    assert fast.shape == ref.shape and ref.abs().max() > 0
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    assert padded.shape[-1] == z.shape[-1] + 5 and (padded[..., :5] == 0).all()


def test_hostile_texts_refused_or_accepted_before_streaming(engine, hostile_texts):
    """Text checks (shared rules + the byte tokenizer) run before the stream exists: any text is
    either accepted or a BadInputError on "input", never another exception."""
    accepted = []
    for name, text in hostile_texts.items():
        try:
            stream = engine.stream(text)
        except BadInputError as exc:
            assert exc.param == "text", (name, exc)
        else:
            stream.close()
            accepted.append(name)
    assert "rtl" in accepted and "nul" not in accepted and "lone-surrogate" not in accepted


@pytest.mark.parametrize("broken", ["echo-tts-base/pytorch_model.safetensors", "echo-tts-base/pca_state.safetensors",
                                    "fish-s1-dac-min/pytorch_model.safetensors"])
def test_corrupt_model_file_is_model_load_error(model_dir, tmp_path, broken):
    import shutil

    from voxbox.engines.registry import load_engine
    from voxbox.errors import ModelLoadError

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    target = copy / broken
    target.write_bytes(target.read_bytes()[:200])  # truncated: the header promises more than is there
    with pytest.raises(ModelLoadError) as ei:
        load_engine("echo-tts", str(copy), device="cpu")
    assert broken.split("/")[-1] in str(ei.value) and "\n" not in str(ei.value)


def _text_inputs(engine, n_tokens: int, length: int):
    ids = torch.zeros((1, length), dtype=torch.int32)
    ids[0, :n_tokens] = torch.arange(1, n_tokens + 1, dtype=torch.int32) * 7 % 250
    mask = torch.zeros((1, length), dtype=torch.bool)
    mask[0, :n_tokens] = True
    return ids, mask


def test_text_context_is_upstreams_encoder_then_context_kv(engine):
    # the graph-ready text path (rotary table kept on the device) == upstream's TextEncoder.forward + norm
    ids, mask = _text_inputs(engine, 20, 128)
    with torch.inference_mode():
        state = engine.text_norm(engine.text_encoder(ids, mask))
        ref = engine.dit.context_kv(state.to(engine.dit.dtype), engine.dit.w_ctx_text)
        ours = engine.text_context(ids, mask)
    assert not engine.text_context.use_graphs  # the CPU runs it eagerly
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape and b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_text_context_graph_replays_equal_eager(model_dir):
    from voxbox.engines.tts import echo

    eng = echo.load(model_dir, device="cuda")
    assert eng.text_context.use_graphs
    for n in (20, 90, 5):  # a second text of the same length replays the captured graph with new inputs
        ids, mask = _text_inputs(eng, n, 128)
        with torch.inference_mode():
            ref = eng.text_context.forward(ids.cuda(), mask.cuda())
            got = eng.text_context(ids, mask)
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b)
    assert eng.text_context.captured == 1
    eng.close()


def test_post_module_with_device_mask_equals_upstream(engine):
    # the window mask made on the device == upstream's CPU-built make_window_limited_mask path
    from voxbox.engines.tts.echo._codec import post_module

    pm = engine.ae.quantizer.post_module
    assert type(pm).__name__ == "WindowLimitedTransformer" and pm.window_size  # the path under test runs
    gen = torch.Generator().manual_seed(1)
    for n in (7, pm.window_size + 40):  # shorter and longer than the window
        z = torch.randn((2, engine.pca.components.shape[1], n), generator=gen)  # (batch, ae latent, frames)
        with torch.inference_mode():
            torch.testing.assert_close(post_module(engine.ae, z), pm(z), rtol=0, atol=0)


def test_zero_padding_at_the_end_leaves_the_decoded_audio_unchanged(engine):
    # what DecodeGraphs relies on: every decode stage is causal, so frames appended after the
    # latent do not change the audio of the frames before them
    from voxbox.engines.tts.echo._codec import HOP, decode_bucket, run_decoder, upsampled

    assert [decode_bucket(n) for n in (1, 16, 17, 64, 65, 97, 640)] == [16, 16, 32, 64, 96, 128, 640]
    lat = torch.randn((1, 21, 80), generator=torch.Generator().manual_seed(4)) * 0.5
    padded = torch.cat([lat, lat.new_zeros((1, decode_bucket(21) - 21, 80))], dim=1)
    with torch.inference_mode():
        ref = run_decoder(engine.ae, upsampled(engine.ae, engine.pca, lat))
        got = run_decoder(engine.ae, upsampled(engine.ae, engine.pca, padded))[..., :21 * HOP]
    assert ref.shape == got.shape == (1, 1, 21 * HOP)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decode_graphs_equal_eager(model_dir):
    from voxbox.engines.tts import echo
    from voxbox.engines.tts.echo._codec import run_decoder, upsampled

    eng = echo.load(model_dir, device="cuda")
    g = eng.decode_graphs
    assert g.enabled
    gen = torch.Generator(device="cuda").manual_seed(2)
    for n in (16, 16, 70, 90):  # capture, replay with a new latent, a padded size, the same padded size
        lat = torch.randn((1, n, 80), device="cuda", generator=gen) * 0.5
        with torch.inference_mode():
            ref = run_decoder(eng.ae, upsampled(eng.ae, eng.pca, lat))
            got = g(lat)
        assert got is not None
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert sorted(g._graphs) == [16, 96]
    eng.close()
