"""omnivoice against upstream's own inference path on a tiny random checkpoint in the upstream layout.

The checkpoint is written by voxbox's ``write_random_model`` and read by *both* sides: upstream's
``OmniVoice.from_pretrained`` (model, tokenizer, transformers' Higgs audio tokenizer, feature
extractor) and voxbox's loader. Upstream's modules import torchaudio at module level (for
resampling and file loading) and torchaudio does not load against this torch, so only this module
puts an empty ``torchaudio`` stand-in in ``sys.modules`` while it imports upstream; its one function
that would be used (``functional.resample``) raises, and is never reached because the tiny codec
runs at one sample rate (16 kHz for audio, HuBERT and references). Everything else upstream runs
for real, including pydub's silence trimming.

Same seed, same inputs: the same tokens, and audio equal to within float rounding.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
for _mod in ("omnivoice", "pydub", "soundfile", "accelerate"):
    if importlib.util.find_spec(_mod) is None:
        pytest.skip(
            f"UPSTREAM PARITY NOT TESTED: {_mod} is not installed "
            "(pip install --no-deps omnivoice && pip install pydub soundfile accelerate)",
            allow_module_level=True,
        )

from voxbox.types import Audio  # noqa: E402 - after the importorskip guards

RATE = 16000
TEXT = "Hello there, a test."


def _resample_unused(*args, **kwargs):  # pragma: no cover - a reached call is a test failure
    raise AssertionError("torchaudio.functional.resample reached: the tiny codec should need no resampling")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Toy-sized ops: one intra-op thread is faster (and fair to a shared 2-core box); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from voxbox.engines.tts.omnivoice._random import write_random_model

    return write_random_model(tmp_path_factory.mktemp("omnivoice") / "model", "tiny")


@pytest.fixture(scope="module")
def upstream(model_dir):
    """Upstream's ``OmniVoice`` loaded by its own ``from_pretrained`` (float32, CPU)."""
    import transformers  # noqa: F401 - its availability checks must run before the stand-in exists

    mp = pytest.MonkeyPatch()
    stand_in = types.ModuleType("torchaudio")
    stand_in.functional = types.SimpleNamespace(resample=_resample_unused)
    mp.setitem(sys.modules, "torchaudio", stand_in)
    try:
        higgs = importlib.import_module(
            "transformers.models.higgs_audio_v2_tokenizer.modeling_higgs_audio_v2_tokenizer"
        )
        ov = importlib.import_module("omnivoice.models.omnivoice")
        # transformers' lazy export is a placeholder without torchaudio; hand upstream the real class
        mp.setattr(ov, "HiggsAudioV2TokenizerModel", higgs.HiggsAudioV2TokenizerModel)
        model = ov.OmniVoice.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        ua = importlib.import_module("omnivoice.utils.audio")
        yield types.SimpleNamespace(model=model, module=ov, audio=ua)
    finally:
        mp.undo()
        for name in [m for m in sys.modules if m == "omnivoice" or m.startswith("omnivoice.")
                     or m.endswith("modeling_higgs_audio_v2_tokenizer")]:
            del sys.modules[name]  # imported with the stand-in: forget them


@pytest.fixture(scope="module")
def engine(model_dir):
    from voxbox.engines.registry import load_engine

    return load_engine("omnivoice", str(model_dir), device="cpu")


def _ref_clip() -> tuple[np.ndarray, str]:
    t = np.arange(int(1.5 * RATE), dtype=np.float32) / RATE
    wav = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    wav[int(0.6 * RATE):int(0.65 * RATE)] = 0.0
    return wav, "This is the reference"


def _upstream_generate(up, seed: int, **kw):
    torch.manual_seed(seed)
    return up.model.generate(TEXT if "text" not in kw else kw.pop("text"), **kw)[0]


CASES = {
    "design": (dict(instruct="female, british accent", language="en", num_step=8),
               dict(voice_description="female, british accent", language="en", steps=8)),
    "auto-defaults": (dict(), dict()),
    "sampled-classes-no-guidance": (dict(num_step=6, class_temperature=0.8, guidance_scale=0.0),
                                    dict(steps=6, class_temperature=0.8, guidance_scale=0.0)),
    "greedy-positions-raw-output": (dict(num_step=5, position_temperature=0.0, postprocess_output=False),
                                    dict(steps=5, position_temperature=0.0, postprocess=False)),
    "speed-and-shift": (dict(num_step=8, speed=1.4, t_shift=0.5, layer_penalty_factor=2.0),
                        dict(steps=8, t_shift=0.5, layer_penalty_factor=2.0)),
    "duration": (dict(num_step=4, duration=0.7), dict(steps=4, duration=0.7)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_generate_matches_upstream(upstream, engine, case):
    up_kw, our_kw = CASES[case]
    ref = _upstream_generate(upstream, 11, **up_kw)
    speed = up_kw.get("speed")
    ours = engine.synthesize(TEXT, speed=speed, seed=11, **our_kw).samples
    assert ours.shape == ref.shape and np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, atol=2.5e-4, rtol=0)


def test_clone_matches_upstream(upstream, engine):
    wav, text = _ref_clip()
    prompt = upstream.model.create_voice_clone_prompt((torch.from_numpy(wav)[None], RATE), ref_text=text)
    voice = engine.encode_voice(Audio(wav, RATE), text)
    assert torch.equal(voice.data["codes"], prompt.ref_audio_tokens.cpu())
    assert voice.data["rms"] == pytest.approx(prompt.ref_rms, rel=1e-6)
    ref = _upstream_generate(upstream, 5, voice_clone_prompt=prompt, num_step=8)
    ours = engine.synthesize(TEXT, voice=voice, steps=8, seed=5).samples
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2.5e-4, rtol=0)
    # a raw clip + transcript gives the same as the pre-encoded voice (and hits the voice cache)
    hits = engine.voice_cache_hits
    raw = engine.synthesize(TEXT, voice=Audio(wav, RATE), reference_text=text, steps=8, seed=5).samples
    np.testing.assert_array_equal(raw, ours)
    assert engine.voice_cache_hits == hits + 1


def _record(obj, name, sink):
    original = getattr(obj, name)

    def wrapper(codes, *a, **k):
        sink.append(codes.detach().cpu().reshape(codes.shape[-2:]).clone())
        return original(codes, *a, **k)
    return original, wrapper


def test_long_text_pieces_match_upstream_chunks(upstream, engine, monkeypatch):
    """Texts over the threshold are generated in upstream's chunks (the first chunk is the voice
    reference of the rest); voxbox streams them piece by piece: same tokens per piece."""
    text = "The first one is here. Then a second, longer. A third! And a fourth."
    up_codes: list = []
    our_codes: list = []
    _, up_wrap = _record(upstream.model.audio_tokenizer, "decode", up_codes)
    monkeypatch.setattr(upstream.model.audio_tokenizer, "decode", up_wrap)
    _, our_wrap = _record(engine.codec, "decode", our_codes)
    monkeypatch.setattr(engine.codec, "decode", our_wrap)
    _upstream_generate(upstream, 3, text=text, num_step=3, audio_chunk_threshold=1.0, audio_chunk_duration=0.6)
    stream = engine.stream(text, steps=3, seed=3, chunk_threshold=1.0, chunk_seconds=0.6)
    chunks = list(stream)
    assert len(up_codes) >= 3 and stream.details["pieces"] == len(up_codes) == len(chunks)
    for a, b in zip(our_codes, up_codes, strict=True):
        assert torch.equal(a, b)


def test_prompt_text_matches_upstream(upstream, engine):
    from voxbox.engines.tts.omnivoice import _text

    ov = upstream.module
    for desc, text in [("Female, British Accent", "hi"), ("male，low pitch", "你好"), ("male, 四川话", "hello"),
                       ("  elderly ,whisper ", "x"), (None, "x")]:
        assert _text.resolve_instruct(desc, text) == ov._resolve_instruct(desc, use_zh=bool(ov._ZH_RE.search(text)))
    from voxbox.errors import BadInputError

    for bad in ("male, female", "purple voice", "british accent, 四川话"):
        with pytest.raises(ValueError):
            ov._resolve_instruct(bad)
        with pytest.raises(BadInputError):
            _text.resolve_instruct(bad, "x")
    tok = upstream.model.text_tokenizer
    s = "<|text_start|>Well [laughter] that is 你好 funny [sigh]\n ok（yes）<|text_end|>"
    assert _text.text_ids(engine.tokenizer, s) == ov._tokenize_with_nonverbal_tags(s, tok)[0].tolist()
    assert _text.combine_text("B  c\n 你 好", "A.") == ov._combine_text("B  c\n 你 好", "A.")
    assert _text.timesteps(8, 0.1) == ov._get_time_steps(num_step=8, t_shift=0.1).tolist()


def test_silence_trim_matches_pydub(upstream):
    from voxbox.engines.tts.omnivoice import _post

    gen = np.random.default_rng(0)
    for rate in (16000, 24000):
        parts = [np.zeros(int(0.37 * rate)), gen.normal(0, 0.1, int(0.8 * rate)), np.zeros(int(1.3 * rate)),
                 gen.normal(0, 0.2, int(0.25 * rate)), 1e-4 * gen.normal(0, 1, int(0.7 * rate)),
                 gen.normal(0, 0.05, int(0.61 * rate) + 7), np.zeros(int(0.9 * rate) + 3)]
        wav = np.concatenate(parts).astype(np.float32)
        for mid, lead, trail in ((500, 100, 100), (200, 100, 200)):
            ref = upstream.audio.remove_silence(wav[None], rate, mid_sil=mid, lead_sil=lead, trail_sil=trail)[0]
            ours = _post.remove_silence(wav, rate, mid_ms=mid, lead_ms=lead, trail_ms=trail)
            assert len(ours) < len(wav)
            np.testing.assert_array_equal(ours, ref)
