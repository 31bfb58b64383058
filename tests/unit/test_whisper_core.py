"""The shared Whisper core (engines/asr/whisper): features, tokens, timestamp rules, segments and
argument checks, against the references (faster-whisper, transformers) and across the three engines."""

from __future__ import annotations

import numpy as np
import pytest

from voxbox.audio.decode import decode
from voxbox.engines.asr.whisper import features as wf
from voxbox.engines.asr.whisper.segments import (
    DecodeResult,
    sequential_segments,
    window_segments,
)
from voxbox.engines.asr.whisper.timestamps import (
    apply_timestamp_rules,
    clamp,
    split_segments,
)
from voxbox.engines.asr.whisper.tokens import LANGUAGES, WhisperTokenizer, language_code
from voxbox.engines.asr.whisper.validate import check_language
from voxbox.errors import BadInputError, UnsupportedOperationError
from voxbox.models.bundled import whisper_tiny_en_dir


@pytest.fixture(scope="module")
def tok_en() -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)


@pytest.fixture(scope="module")
def tok_ml() -> WhisperTokenizer:
    from voxbox.convert.tiny import bundled_tokenizer_dir

    d = bundled_tokenizer_dir(True)
    if d is None:
        pytest.skip("the multilingual tokenizer comes with voxbox[base]")
    return WhisperTokenizer.from_dir(d, 51865)


@pytest.fixture(scope="module")
def beckett(moonshine_assets):
    return decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)


# -- features -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_mels", [80, 128])
def test_one_filterbank_equals_faster_whisper_and_transformers(n_mels):
    from faster_whisper.feature_extractor import FeatureExtractor

    ours = wf.mel_filters(n_mels)
    assert ours.shape == (n_mels, 201) and not ours.flags.writeable
    np.testing.assert_allclose(ours, FeatureExtractor.get_mel_filters(16000, 400, n_mels), rtol=0, atol=1e-7)
    fe = pytest.importorskip("transformers.models.whisper.feature_extraction_whisper")
    np.testing.assert_allclose(ours, fe.WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_numpy_torch_and_faster_whisper_log_mel_agree(beckett, n_mels):
    """The same features from the numpy path (onnx-whisper), the torch path (torch-whisper) and
    faster-whisper's extractor, on real speech padded by 30 s (4000 frames: more than one numpy
    STFT block) and on a clip shorter than one STFT window."""
    torch = pytest.importorskip("torch")
    from faster_whisper.feature_extractor import FeatureExtractor

    torch.set_num_threads(1)
    fw = FeatureExtractor(feature_size=n_mels)
    for x in (beckett.samples, np.full(150, 0.1, np.float32)):
        ours = wf.log_mel(x, n_mels, padding=wf.CHUNK_SAMPLES)
        on_device = wf.log_mel_torch(torch.from_numpy(np.ascontiguousarray(x)), n_mels, padding=wf.CHUNK_SAMPLES)
        ref = fw(np.ascontiguousarray(x), padding=wf.CHUNK_SAMPLES)
        assert ours.shape == tuple(on_device.shape) == ref.shape == (n_mels, (len(x) + wf.CHUNK_SAMPLES) // 160)
        assert ours.shape[1] > wf._BLOCK or len(x) < 400
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
        np.testing.assert_allclose(on_device.numpy(), ref, rtol=0, atol=1e-4)
    # a negative control: the features do depend on the audio
    assert (
        np.abs(wf.log_mel(beckett.samples[:16000], n_mels) - wf.log_mel(beckett.samples[16000:32000], n_mels)).max()
        > 0.5
    )


# -- tokens ---------------------------------------------------------------------------------------

def test_language_table_is_whispers(tok_ml):
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(LANGUAGES) == set(_LANGUAGE_CODES) and len(LANGUAGES) == 100
    assert tok_ml.multilingual and tok_ml.languages == LANGUAGES[:99]  # 'yue' arrived with large-v3


def test_language_codes():
    assert language_code("EN") == language_code("en-US") == language_code(" en_GB ") == "en"
    assert language_code(None) is None and language_code("") is None
    assert language_code("haw") == "haw"
    for bad in ("xx", "english", 3):
        with pytest.raises(BadInputError) as ei:
            language_code(bad)
        assert ei.value.param == "language"
    assert check_language("de", LANGUAGES[:99], "base") == "de"
    with pytest.raises(UnsupportedOperationError, match="English-only"):
        check_language("de", ("en",), "tiny.en")
    with pytest.raises(UnsupportedOperationError, match="no language 'yue'"):
        check_language("yue", LANGUAGES[:99], "base")


def test_tokens_match_faster_whisper(tok_en, tok_ml):
    from faster_whisper.tokenizer import Tokenizer

    assert not tok_en.multilingual and tok_en.languages == ("en",)
    for tok, multilingual in ((tok_en, False), (tok_ml, True)):
        ref = Tokenizer(tok.tok, multilingual, task="translate", language="de" if multilingual else "en")
        assert tok.non_speech_tokens == tuple(ref.non_speech_tokens)
        assert tok.sot_sequence("de" if multilingual else None, "translate", True) == list(ref.sot_sequence)
        assert (tok.eot, tok.sot_prev, tok.no_timestamps, tok.timestamp_begin) == (
            ref.eot, ref.sot_prev, ref.no_timestamps, ref.timestamp_begin)


def test_suppression_and_prompts(tok_en):
    specials = {tok_en.transcribe, tok_en.translate, tok_en.sot, tok_en.sot_prev, tok_en.sot_lm, tok_en.no_speech}
    default = set(tok_en.suppress_tokens(None))
    assert set(tok_en.non_speech_tokens) | specials == default == set(tok_en.suppress_tokens([-1]))
    assert set(tok_en.suppress_tokens([5, 7])) == {5, 7} | specials
    assert set(tok_en.suppress_tokens([-1, 5])) == default | {5}
    assert tok_en.begin_suppress_tokens(None) == (220, tok_en.eot)
    sot = tok_en.sot_sequence(None, "transcribe", True)
    assert tok_en.decoder_prompt(sot, [], 448) == sot
    prompt = tok_en.decoder_prompt(sot, list(range(300)), 448)
    assert prompt[0] == tok_en.sot_prev and prompt[1:-1] == list(range(300 - 223, 300)) and prompt[-1] == tok_en.sot
    assert tok_en.prompt_tokens("  ") == [] and tok_en.decode(tok_en.prompt_tokens("Hello there.")) == " Hello there."


# -- timestamps -----------------------------------------------------------------------------------

TB = 50364


def test_split_segments_follows_timestamp_pairs():
    toks = [TB + 0, 10, 11, TB + 50, TB + 50, 12, TB + 120, TB + 120, 13]  # two closed pairs, then open text
    pieces, advance = split_segments(toks, TB, 30.0, 3000)
    assert [(round(p.start, 2), round(p.end, 2), p.tokens) for p in pieces] == [
        (30.0, 31.0, [TB, 10, 11, TB + 50]), (31.0, 32.4, [TB + 50, 12, TB + 120])]
    assert advance == 240  # seek to the last complete pair (2.4 s = 240 mel frames)
    # windows decoded side by side do not seek: the open text is a last piece up to the window's end
    pieces, advance = split_segments(toks, TB, 30.0, 3000, seek=False)
    assert advance == 3000 and (pieces[-1].start, pieces[-1].end, pieces[-1].tokens) == (32.4, 60.0, [TB + 120, 13])
    # no pair: one piece up to the last timestamp; a single timestamp at the end consumes the window
    pieces, advance = split_segments([TB, 10, TB + 100], TB, 0.0, 1200)
    assert [(p.start, p.end) for p in pieces] == [(0.0, 2.0)] and advance == 1200
    pieces, advance = split_segments([TB, 10, TB + 5, TB + 5, 11, TB + 9], TB, 0.0, 3000)
    assert [p.tokens for p in pieces] == [[TB, 10, TB + 5], [TB + 5, 11, TB + 9]] and advance == 3000
    # a last pair at 0.00 would seek nowhere: the window is consumed and its text kept
    pieces, advance = split_segments([TB, TB, 10], TB, 0.0, 3000)
    assert advance == 3000 and pieces[-1].tokens == [TB, 10]


def test_timestamp_rules():
    eot, nts, tb, v = 10, 11, 12, 20
    logits = np.zeros(v, np.float32)
    apply_timestamp_rules(logits, [], eot=eot, no_timestamps=nts, timestamp_begin=tb, max_initial_timestamp_index=2)
    assert np.isinf(logits[:tb]).all() and np.isfinite(logits[tb:tb + 3]).all() and np.isinf(logits[tb + 3:]).all()
    logits = np.zeros(v, np.float32)
    apply_timestamp_rules(logits, [tb + 2, 5], eot=eot, no_timestamps=nts, timestamp_begin=tb)
    assert np.isinf(logits[tb:tb + 3]).all()  # no going back in time
    logits = np.zeros(v, np.float32)
    apply_timestamp_rules(logits, [tb + 2, 5, tb + 4], eot=eot, no_timestamps=nts, timestamp_begin=tb)
    assert np.isinf(logits[:eot]).all()  # an opened timestamp must be closed (or end)


def test_torch_rules_equal_numpy_rules(tok_en):
    """torch-whisper's graph-safe rule tensors and the numpy rules mask the same tokens, step by
    step along sequences sampled under the rules from random logits."""
    torch = pytest.importorskip("torch")
    from voxbox.engines.asr.torch_whisper.rules import Rules, RuleTensors, apply_rules

    tok = tok_en
    vocab = tok.vocab_size
    rt = RuleTensors(Rules(timestamps=True, max_initial_timestamp_index=50), tok, vocab, torch.device("cpu"))
    prompt = tok.sot_sequence(None, "transcribe", True)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(3):
        sampled: list[int] = []
        for _ in range(40):
            logits = rng.normal(0, 3, vocab).astype(np.float32)
            logits[tok.timestamp_begin:] += rng.normal(2, 3)  # timestamps as likely as text, sometimes more
            ref = logits.copy()
            apply_timestamp_rules(ref, sampled, eot=tok.eot, no_timestamps=tok.no_timestamps,
                                  timestamp_begin=tok.timestamp_begin, max_initial_timestamp_index=50)
            history = torch.tensor([prompt + sampled + [0] * (64 - len(prompt) - len(sampled))])
            pos = torch.tensor([len(prompt) + len(sampled) - 1])
            ours = apply_rules(history, pos, torch.tensor([len(prompt)]), torch.from_numpy(logits[None]), rt)[0]
            assert np.array_equal(np.isinf(ref), torch.isinf(ours).numpy())
            nxt = int(np.argmax(np.where(np.isinf(ref), -np.inf, ref + rng.gumbel(size=vocab))))
            checked += 1
            if nxt == tok.eot:
                break
            sampled.append(nxt)
    assert checked > 20


def test_clamp():
    assert clamp(1.0, 3.0, 7.2) == (1.0, 3.0)
    assert clamp(6.6, 13.6, 7.2) == (6.6, 7.2)  # issue #22's hallucinated segment, clamped
    assert clamp(7.2, 9.0, 7.2) is None and clamp(8.0, 9.0, 7.2) is None  # starts at/after the end: dropped
    assert clamp(2.0, 1.0, 7.2) == (2.0, 2.0)


# -- segments -------------------------------------------------------------------------------------

def test_window_segments_clamp_and_drop(tok_en):
    tb = tok_en.timestamp_begin
    hello, world, again = tok_en.encode(" Hello"), tok_en.encode(" world"), tok_en.encode(" again")
    # 0.0-2.0 " Hello", 2.0-5.0 " world" (past the 3.5 s clip), 5.0-6.0 " again" (starts after it), 6.0-6.5 ""
    toks = [tb, *hello, tb + 100, tb + 100, *world, tb + 250, tb + 250, *again, tb + 300, tb + 300, tb + 325]
    r = DecodeResult(toks, -3.0, 0.1, 0.2)
    segs, consumed, advance = window_segments(tok_en, r, offset=0.0, window_frames=350, duration=3.5,
                                              timestamps=True, seek=True, first_id=4)
    assert [(s.id, s.start, s.end, s.text) for s in segs] == [(4, 0.0, 2.0, " Hello"), (5, 2.0, 3.5, " world")]
    assert consumed == toks[:9] and advance == 350  # segments' tokens (past the end too); the window is consumed
    assert segs[0].avg_logprob == pytest.approx(-3.0 / (len(toks) + 1)) and segs[0].temperature == 0.2
    # without timestamps: the window is one segment, clamped to the audio
    segs, _, _ = window_segments(tok_en, DecodeResult(hello, -1.0), offset=0.0, window_frames=3000, duration=3.5,
                                 timestamps=False, seek=True, first_id=0)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 3.5, " Hello")]


def test_sequential_loop_seeks_and_conditions(tok_en):
    tb = tok_en.timestamp_begin
    word = tok_en.encode(" word")
    calls: list[tuple[int, int, list[int]]] = []

    def decode(seek: int, frames: int, previous: list[int]) -> DecodeResult:
        calls.append((seek, frames, list(previous)))
        if seek == 0:  # one closed pair ending at 10.0 s, then unfinished text: seek to 10.0 s
            return DecodeResult([tb, *word, tb + 500, tb + 500, *word], -1.0, temperature=0.8)
        return DecodeResult([tb, *word, tb + 100], -1.0)  # one segment, then the rest of the window

    segs = list(sequential_segments(tok_en, decode, content_frames=1500, duration=15.0, timestamps=True,
                                    condition_on_previous_text=True, prompt=[7, 8]))
    assert [(s.start, s.end) for s in segs] == [(0.0, 10.0), (10.0, 12.0)]
    assert [(c[0], c[1]) for c in calls] == [(0, 1500), (1000, 500)]
    assert calls[0][2] == [7, 8]
    assert calls[1][2] == []  # the first window needed temperature 0.8 > 0.5: conditioning resets
    assert [s.id for s in segs] == [0, 1]


# -- the three engines make the same checks -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_engines(tmp_path_factory):
    """One random tiny English-only Whisper in the three formats, loaded by the three engines."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    import torch

    from voxbox.convert.onnx_export import copy_files, export_onnx, write_onnx_config
    from voxbox.convert.tiny import make_tiny_whisper
    from voxbox.convert.whisper import convert_ct2, inspect_checkpoint
    from voxbox.engines.registry import load_engine

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_three")
    src = make_tiny_whisper(root / "hf", multilingual=False)
    ck = inspect_checkpoint(src)
    convert_ct2(ck, root / "ct2", "float32")
    info = export_onnx(src, root / "onnx")
    write_onnx_config(root / "onnx", info, ck.config, ck.generation_config, ck.special_ids, "float32")
    copy_files(ck.tokenizer_files, root / "onnx")
    engines = {
        "faster-whisper": load_engine("faster-whisper", str(root / "ct2"), device="cpu", dtype="float32", threads=1),
        "torch-whisper": load_engine("torch-whisper", str(src), device="cpu"),
        "onnx-whisper": load_engine("onnx-whisper", str(root / "onnx"), device="cpu", threads=1),
    }
    yield engines
    for e in engines.values():
        e.close()


def _noise(seconds: float, seed: int = 0):
    from voxbox.types import Audio

    rng = np.random.default_rng(seed)
    return Audio((0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)


BAD_CALLS = [
    ({"task": "summarize"}, BadInputError, "task"),
    ({"task": "translate"}, UnsupportedOperationError, "task"),
    ({"language": "xx"}, BadInputError, "language"),
    ({"language": "de"}, UnsupportedOperationError, "language"),
    ({"language": 3}, BadInputError, "language"),
    ({"prompt": 3}, BadInputError, "prompt"),
    ({"word_timestamps": "yes"}, BadInputError, "word_timestamps"),
    ({"temperature": 1.5}, BadInputError, "temperature"),
    ({"temperature": []}, BadInputError, "temperature"),
    ({"beam_size": 0}, BadInputError, "beam_size"),
    ({"max_new_tokens": 0}, BadInputError, "max_new_tokens"),
    ({"no_such_option": 1}, BadInputError, "no_such_option"),
]


@pytest.mark.parametrize("name", ["faster-whisper", "torch-whisper", "onnx-whisper"])
def test_same_checks_in_every_whisper_engine(tiny_engines, name):
    from voxbox.types import Audio

    engine = tiny_engines[name]
    audio = _noise(1.0)
    for kwargs, exc, param in BAD_CALLS:
        with pytest.raises(exc) as ei:
            engine.transcribe(audio, **kwargs)
        assert type(ei.value) is exc and ei.value.param == param, (kwargs, ei.value)
    with pytest.raises(BadInputError) as ei:
        engine.transcribe(Audio(np.zeros(0, np.float32), 16000))
    assert ei.value.param == "audio"
    segs, info = engine.transcribe(audio, language="en-US", max_new_tokens=4, temperature=0.0)
    list(segs)
    assert info.language == "en"


@pytest.mark.parametrize("name", ["faster-whisper", "torch-whisper", "onnx-whisper"])
def test_times_never_pass_the_end_of_the_audio(tiny_engines, name):
    """A random model places timestamps anywhere in the 30 s window; on a 2 s clip they run past
    the end (checked from the segments' own timestamp tokens), and every engine clamps them."""
    engine = tiny_engines[name]
    audio = _noise(2.0, seed=1)
    words = engine.info.supports_word_timestamps
    segs, info = engine.transcribe(audio, language="en", max_new_tokens=12, temperature=0.0, word_timestamps=words)
    segs = list(segs)
    assert segs and info.duration == pytest.approx(2.0)
    assert all(0.0 <= s.start <= s.end <= info.duration and s.start < info.duration for s in segs)
    if words:
        assert all(0.0 <= w.start <= w.end <= info.duration for s in segs for w in s.words or [])
    tb = 50363  # English-only vocabulary: <|0.00|>; times within a window are a lower bound of the raw ones
    raw = [(t - tb) * 0.02 for s in segs for t in (s.tokens or []) if t >= tb]
    assert max(raw) > info.duration  # negative control: without clamping the test would fail


@pytest.mark.slow
def test_faster_whisper_base_clamps_a_hallucinated_segment(moonshine_assets):
    """Issue #22 on real weights: base, 7.2 s from 27.6 s into two_cities.wav, beam 5. faster-whisper
    itself returns a last segment ending at 21.7 s; voxbox ends it at the end of the audio."""
    from faster_whisper import WhisperModel

    from voxbox.engines.registry import load_engine
    from voxbox.errors import EngineUnavailableError
    from voxbox.models.bundled import whisper_base_dir
    from voxbox.types import Audio

    try:
        model_dir = whisper_base_dir()
    except EngineUnavailableError as exc:
        pytest.skip(str(exc))
    a = decode(str(moonshine_assets / "two_cities.wav"), sample_rate=16000)
    clip = Audio(np.ascontiguousarray(a.samples[int(27.6 * 16000) : int(34.8 * 16000)]), 16000)
    raw = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    raw_segs = list(raw.transcribe(clip.samples, beam_size=5, language="en")[0])
    assert max(s.end for s in raw_segs) > clip.duration + 1  # the upstream behaviour (negative control)
    engine = load_engine("faster-whisper", "base", device="cpu", threads=2)
    segs, _ = engine.transcribe(clip, beam_size=5, language="en")
    segs = list(segs)
    engine.close()
    assert [s.text for s in segs] == [s.text for s in raw_segs]
    assert segs[-1].end == pytest.approx(clip.duration, abs=1e-3)
    assert all(s.start < s.end <= clip.duration for s in segs)
