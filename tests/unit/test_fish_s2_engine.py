"""fish-s2 on the CPU: a tiny random S2-shaped model written in the upstream layout, loaded for real.

The directory is built by the test (config.json, two safetensors shards + index, codec.pth with
weight-normed convs, a byte-level tokenizer.json with the S2 special tokens), then loaded through
``voxbox.engines.tts.fish_s2.load`` and driven through the public engine API.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")

from voxbox.engines.base import EncodedVoice, TTSEngine  # noqa: E402
from voxbox.engines.tts import fish_s2  # noqa: E402
from voxbox.engines.tts.fish_s2.config import (  # noqa: E402
    CodecConfig,
    CodecTransformerConfig,
    DualARConfig,
    TransformerConfig,
    load_dual_ar_config,
)
from voxbox.engines.tts.fish_s2.loader import fold_weight_norm, write_checkpoint  # noqa: E402
from voxbox.errors import BadInputError, ModelNotFoundError, UnsupportedOperationError, VoiceNotFoundError  # noqa: E402
from voxbox.types import Audio  # noqa: E402

N_SEM = 32
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<|voice|>", "<|speaker:0|>"]


def _tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS + [f"<|semantic:{i}|>" for i in range(N_SEM)])
    tok.save(str(path))
    return tok


def build_tiny(root: Path, seed: int = 0):
    root.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(root / "tokenizer.json")
    text = TransformerConfig(vocab_size=tok.get_vocab_size() + 7, dim=64, n_layer=2, n_head=4, n_local_heads=2,
                             head_dim=16, intermediate_size=128, rope_base=1e6, norm_eps=1e-6, max_seq_len=1024,
                             attention_qk_norm=True, tie_word_embeddings=True)
    fast = TransformerConfig(vocab_size=N_SEM, dim=32, n_layer=2, n_head=4, n_local_heads=2, head_dim=8,
                             intermediate_size=64, rope_base=1e6, norm_eps=1e-6, max_seq_len=5,
                             tie_word_embeddings=False, text_dim=64, num_codebooks=4)
    cfg = DualARConfig(text=text, fast=fast, eos_token_id=tok.token_to_id("<|im_end|>"),
                       pad_token_id=tok.token_to_id("<|pad|>"),
                       semantic_start_token_id=tok.token_to_id("<|semantic:0|>"),
                       semantic_end_token_id=tok.token_to_id(f"<|semantic:{N_SEM - 1}|>"))
    codec = CodecConfig(encoder_dim=16, encoder_rates=(2, 4), decoder_dim=32, decoder_rates=(4, 2),
                        encoder_transformer_layers=(0, 1), encoder_transformer_window=8, n_codebooks=3,
                        codebook_size=16, codebook_dim=4, semantic_codebook_size=N_SEM, downsample_factor=(2,),
                        quantizer_transformer=CodecTransformerConfig(n_layer=1, n_head=2, dim=128,
                                                                     intermediate_size=96, head_dim=32, window_size=4))
    mods = write_checkpoint(root, cfg, codec, seed=seed)
    return cfg, codec, mods


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fish_s2")
    cfg, codec_cfg, mods = build_tiny(root)
    return root, cfg, codec_cfg, mods


@pytest.fixture(scope="module")
def engine(tiny):
    eng = fish_s2.load(tiny[0], device="cpu", max_voices=2, eos_check=4)
    yield eng
    eng.close()


def _ref(seconds: float, rate: int = 44100, seed: int = 0) -> Audio:
    rng = np.random.default_rng(seed)
    return Audio((0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)


# ---------------------------------------------------------------------- loading
def test_upstream_layout_on_disk(tiny):
    root, cfg, _, _ = tiny
    shards = sorted(p.name for p in root.glob("model-*.safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    from safetensors import safe_open

    names = set()
    for s in shards:
        with safe_open(str(root / s), "pt") as f:
            names |= set(f.keys())
    assert "text_model.model.layers.0.feed_forward.w1.weight" in names
    assert "text_model.model.layers.1.attention.q_norm.weight" in names
    assert "audio_decoder.codebook_embeddings.weight" in names
    assert "audio_decoder.project_in.weight" in names  # fast dim 32 != text dim 64
    assert not any("w13" in n for n in names)
    codec = torch.load(root / "codec.pth", weights_only=True)
    assert any(k.endswith("parametrizations.weight.original0") for k in codec)
    assert any(k.endswith("in_proj.weight_g") for k in codec)
    assert load_dual_ar_config(root) == cfg


def test_loader_maps_weights(engine, tiny):
    _, _, _, mods = tiny
    r = engine.runner
    ref = mods["slow"].layers[1].feed_forward.w13.weight
    assert torch.equal(r.slow.layers[1].feed_forward.w13.weight, ref)
    assert torch.equal(r.fast.codebook_embeddings.weight, mods["fast"].codebook_embeddings.weight)
    # weight norm folded back: the loaded conv weights reproduce the written ones
    got = dict(engine.codec.state_dict())
    for k, v in mods["codec"].state_dict().items():
        assert torch.allclose(got[k], v, atol=1e-6), k


def test_fold_weight_norm_both_layouts():
    v = torch.randn(6, 3, 5)
    g = torch.rand(6, 1, 1) + 0.5
    want = g * v / v.flatten(1).norm(dim=1).view(6, 1, 1)
    a = fold_weight_norm({"x.parametrizations.weight.original0": g, "x.parametrizations.weight.original1": v})
    b = fold_weight_norm({"y.weight_g": g, "y.weight_v": v, "y.bias": torch.zeros(6)})
    assert torch.allclose(a["x.weight"], want) and torch.allclose(b["y.weight"], want)
    assert set(b) == {"y.weight", "y.bias"}


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(ModelNotFoundError):
        fish_s2.load(None)
    with pytest.raises(ModelNotFoundError):
        fish_s2.load(tmp_path, device="cpu")


def test_registry_and_protocol(tiny):
    from voxbox.engines.registry import load_engine

    eng = load_engine("fish-s2", str(tiny[0]), device="cpu")
    assert isinstance(eng, TTSEngine)
    comps = {c.name: c for c in eng.components()}
    assert set(comps) == {"slow_ar", "fast_ar", "codec"}
    assert all(c.params > 0 for c in comps.values())
    assert comps["codec"].kind == "vocoder"
    assert eng.info.sample_rate == 44100 and eng.info.supports_cloning
    eng.close()


def test_placement_parsing():
    p = fish_s2.parse_placement("cpu", placement={"codec": "cpu:float16", "fast_ar": ("cpu", "bfloat16")})
    assert str(p["codec"][1]) == "torch.float16" and str(p["fast_ar"][1]) == "torch.bfloat16"
    assert str(p["slow_ar"][1]) == "torch.float32"
    with pytest.raises(BadInputError):
        fish_s2.parse_placement("cpu", placement={"vocoder": "cpu"})


# ---------------------------------------------------------------------- generation
def test_generate_frames_and_timings(engine):
    t0 = time.perf_counter()
    stream = engine.stream(
        "Hello there, this is a test.", seed=3, max_frames=10, logit_bias={engine.cfg.eos_token_id: -1e4}
    )
    chunks = list(stream)
    wall = time.perf_counter() - t0
    fl = engine.codec.frame_length
    assert sum(len(c.samples) for c in chunks) == 10 * fl
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 2  # first window (4) then the rest
    assert len(chunks[0].samples) == 4 * fl
    st = stream.timings.as_dict()
    assert set(st) == {"prefill", "decode", "codec"}
    assert sum(st.values()) <= wall + 1e-3
    d = stream.details
    assert 0 < d["first_audio_s"] <= wall
    assert d["frames"] == 10 and d["finish_reason"] == "max_frames"
    assert d["codes"].shape == (4, 10)
    assert int(d["codes"][1:].max()) < N_SEM and int(d["codes"].min()) >= 0
    assert all(np.isfinite(c.samples).all() for c in chunks)


def test_stream_concat_equals_whole_decode(engine):
    kw = dict(seed=7, max_frames=24, logit_bias={engine.cfg.eos_token_id: -1e4}, first_window=3, window=5)
    stream = engine.stream("Streaming should not change the audio.", context_frames=40, **kw)
    streamed = np.concatenate([c.samples for c in stream])
    whole = engine.codec.decode(stream.details["codes"]).numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-5)
    # the non-streamed helper gives the same audio for the same seed
    again = engine.synthesize("Streaming should not change the audio.", context_frames=40, **kw)
    np.testing.assert_allclose(again.samples, streamed, atol=1e-6)
    # control: without left context the windows are decoded differently, so the check can fail
    blind = engine.stream("Streaming should not change the audio.", context_frames=0, **kw)
    cut = np.concatenate([c.samples for c in blind])
    assert torch.equal(blind.details["codes"], stream.details["codes"])
    assert np.abs(cut - whole).max() > 1e-3


def test_codec_right_padding_leaves_earlier_audio_unchanged(engine):
    """The batcher pads codec calls on a GPU (more windows, more frames) to a few graph shapes:
    exact because the codec is causal. Control: padding on the left does change the audio."""
    import torch.nn.functional as F

    codec, fl = engine.codec, engine.codec.frame_length
    codes = torch.randint(0, 16, (3, engine.cfg.num_codebooks, 11), generator=torch.Generator().manual_seed(1))
    want = codec.decode_batch(codes)
    padded = codec.decode_batch(F.pad(codes, (0, 5, 0, 0, 0, 1)))
    assert padded.shape == (4, 16 * fl)
    torch.testing.assert_close(padded[:3, : 11 * fl], want, rtol=0, atol=2e-5)  # summation order only
    left = codec.decode_batch(F.pad(codes, (5, 0)))[:, 5 * fl:]
    assert (left - want).abs().max() > 1e-3
    # DecodeGraphs pads (as on a GPU, here without graphs) to 4 windows of 16 frames, then cuts
    from voxbox.engines.tts.fish_s2.codec import DecodeGraphs

    assert DecodeGraphs.padded(3, 11) == (4, 16) and DecodeGraphs.padded(1, 4) == (1, 4)
    assert DecodeGraphs.padded(5, 200) == (8, 200)  # longer than the largest padded length: kept
    cut = DecodeGraphs(codec).decode(codes, pad=True)
    assert cut.shape == want.shape
    torch.testing.assert_close(cut, want, rtol=0, atol=2e-5)


def test_forced_eos_stops_at_k(engine):
    eos = engine.cfg.eos_token_id
    fl = engine.codec.frame_length
    for k in (1, 6):
        stream = engine.stream("Stop early please.", seed=1, min_frames=k, logit_bias={eos: 1e4}, max_frames=40)
        audio = np.concatenate([c.samples for c in stream])
        assert stream.details["finish_reason"] == "eos"
        assert stream.details["frames"] == k
        assert len(audio) == k * fl


def test_max_frames_stops(engine):
    stream = engine.stream("Run to the cap.", seed=2, max_frames=13, logit_bias={engine.cfg.eos_token_id: -1e4})
    audio = np.concatenate([c.samples for c in stream])
    assert stream.details["finish_reason"] == "max_frames"
    assert len(audio) == 13 * engine.codec.frame_length


def test_greedy_is_deterministic(engine):
    a = engine.stream("Same input.", temperature=0, max_frames=6, seed=1)
    b = engine.stream("Same input.", temperature=0, max_frames=6, seed=99)
    list(a), list(b)
    assert torch.equal(a.details["codes"], b.details["codes"])


def test_sampling_options_change_output(engine):
    def codes(**kw):
        s = engine.stream("Different options.", max_frames=8, logit_bias={engine.cfg.eos_token_id: -1e4}, **kw)
        list(s)
        return s.details["codes"]

    assert torch.equal(codes(seed=5), codes(seed=5))
    outs = {tuple(codes(seed=s, temperature=1.5, top_p=1.0, top_k=64, fast_temperature=1.0).flatten().tolist())
            for s in range(4)}
    assert len(outs) > 1


# ---------------------------------------------------------------------- voices
def test_reference_codes_cached_by_content(engine):
    h0, m0 = engine.voice_cache_hits, engine.voice_cache_misses
    ref = _ref(0.05)
    v1 = engine.encode_voice(ref, "the words")
    v2 = engine.encode_voice(Audio(ref.samples.copy(), ref.sample_rate), "other words")
    assert (engine.voice_cache_misses - m0, engine.voice_cache_hits - h0) == (1, 1)
    assert v1.key == v2.key and v1.data["codes"] is v2.data["codes"]
    assert v2.transcript == "other words"
    frames = -(-len(ref) // engine.codec.frame_length)
    assert tuple(v1.data["codes"].shape) == (4, frames)
    # prompt: the reference's semantic row becomes semantic tokens, masked for code injection
    ids, mask = engine.build_prompt("Hi.", v1.data["codes"], "the words")
    assert int(mask.sum()) == frames
    assert torch.equal(ids[mask] - engine.cfg.semantic_start_token_id, v1.data["codes"][0])
    # cloned call by EncodedVoice and by id
    s = engine.stream("Cloned.", voice=v1, max_frames=4, seed=0)
    list(s)
    assert s.details["prompt_tokens"] == len(engine.build_prompt("Cloned.", v1.data["codes"], "the words")[0])
    list(engine.stream("By id.", voice=v1.key[2], max_frames=2))
    # bounded LRU (max_voices=2)
    engine.encode_voice(_ref(0.05, seed=1))
    engine.encode_voice(_ref(0.05, seed=2))
    with pytest.raises(VoiceNotFoundError):
        engine.stream("Gone.", voice=v1.key[2])


def test_voice_from_other_engine_rejected(engine):
    with pytest.raises(BadInputError):
        engine.stream("x", voice=EncodedVoice(("echo-tts", "m", "abc"), {"latent": None}))


# ---------------------------------------------------------------------- validation (before streaming)
@pytest.mark.parametrize("kw", [dict(bogus=1), dict(top_p=0), dict(top_k=0), dict(top_k=1000), dict(temperature=-1),
                                dict(max_frames=0), dict(logit_bias={5: 1.0}), dict(repetition_penalty=0)])
def test_bad_options_fail_early(engine, kw):
    with pytest.raises(BadInputError):
        engine.stream("Hello.", **kw)


def test_bad_inputs_fail_early(engine):
    with pytest.raises(BadInputError):
        engine.stream("   ")
    with pytest.raises(UnsupportedOperationError):
        engine.stream("Hello.", speed=1.5)
    with pytest.raises(VoiceNotFoundError):
        engine.stream("Hello.", voice="nope")
    with pytest.raises(BadInputError):
        engine.encode_voice(Audio(np.zeros(4, np.float32), 44100))


def test_clip_voice_encoded_inside_the_stream(engine):
    clip = _ref(0.06, seed=11)
    m0 = engine.voice_cache_misses
    stream = engine.stream("With a clip.", voice=clip, max_frames=3, seed=0)
    assert engine.voice_cache_misses == m0  # nothing encoded before iteration
    t0 = time.perf_counter()
    list(stream)
    wall = time.perf_counter() - t0
    st = stream.timings.as_dict()
    assert set(st) == {"voice_encode", "prefill", "decode", "codec"}
    assert sum(st.values()) <= wall + 1e-3
    assert engine.voice_cache_misses == m0 + 1
    frames = -(-len(clip) // engine.codec.frame_length)
    assert stream.details["prompt_tokens"] == len(engine.build_prompt("With a clip.", torch.zeros(4, frames), None)[0])


def test_cli_speak_with_model_dir(tiny, tmp_path):
    import subprocess
    import sys
    import wave

    out = tmp_path / "fish.wav"
    proc = subprocess.run(
        [
            sys.executable, "-m", "voxbox.cli", "speak", "Hello there.", "--engine", "fish-s2", "--model-dir",
            str(tiny[0]), "--device", "cpu", "-o", str(out), "--timings",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "prefill" in proc.stderr and "codec" in proc.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 44100 and w.getnframes() > 0


def test_hostile_texts_refused_or_accepted_before_streaming(engine, hostile_texts):
    """The prompt (tokenizer included) is built before the stream exists: any text is either
    accepted or a BadInputError on "input", never another exception."""
    accepted = []
    for name, text in hostile_texts.items():
        try:
            stream = engine.stream(text, max_frames=2)
        except BadInputError as exc:
            assert exc.param == "text", (name, exc)
        else:
            stream.close()
            accepted.append(name)
    assert "rtl" in accepted and "nul" not in accepted and "lone-surrogate" not in accepted


@pytest.mark.parametrize("broken", ["tokenizer.json", "config.json", "codec.pth", "shard"])
def test_corrupt_model_file_is_model_load_error(tiny, tmp_path, broken):
    import shutil

    from voxbox.errors import ModelLoadError

    copy = tmp_path / "s2"
    shutil.copytree(tiny[0], copy)
    target = sorted(copy.glob("model*.safetensors"))[0] if broken == "shard" else copy / broken
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ModelLoadError) as ei:
        fish_s2.load(copy, device="cpu")
    assert "\n" not in str(ei.value)
