"""Word timestamps: the shared alignment (cross-attention heads + DTW) against its references, and
torch-whisper's words against faster-whisper's on the bundled tiny.en (read back into an HF
checkpoint by ``voxbox.convert.ct2_reader``), float32 on the CPU, greedy."""

from __future__ import annotations

import numpy as np
import pytest

from voxbox.audio.decode import decode
from voxbox.engines.asr.whisper.alignment import (
    WordTiming,
    dtw,
    median_filter,
    merge_punctuations,
)
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.models.bundled import whisper_tiny_en_dir

CLIPS = ("beckett.wav", "two_cities.wav")


def _dtw_reference(x: np.ndarray) -> tuple[list[int], list[int]]:
    """The textbook double loop (openai-whisper's and CTranslate2's ``dtw_cpu``), as an oracle."""
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf)
    trace = -np.ones((n + 1, m + 1), dtype=int)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    rows, cols = zip(*path[::-1], strict=True)
    return list(rows), list(cols)


@pytest.mark.parametrize("shape", [(1, 5), (4, 4), (7, 40), (30, 300)])
def test_dtw_matches_the_double_loop(shape):
    rng = np.random.default_rng(shape[0])
    x = rng.normal(size=shape).astype(np.float32)
    rows, cols = dtw(x)
    assert (list(rows), list(cols)) == _dtw_reference(x)
    assert rows[0] == 0 and rows[-1] == shape[0] - 1 and cols[-1] == shape[1] - 1
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)


def test_median_filter_reflects_at_the_edges():
    x = np.array([[5.0, 1.0, 9.0, 2.0, 7.0, 3.0]])
    ref = [np.median(np.pad(x[0], 1, mode="reflect")[j : j + 3]) for j in range(6)]
    assert median_filter(x, 3)[0].tolist() == ref == [1.0, 5.0, 2.0, 7.0, 3.0, 7.0]
    assert median_filter(x[:, :1], 7).tolist() == [[5.0]]  # too short to reflect: unchanged


def test_words_split_like_faster_whisper():
    from faster_whisper.tokenizer import Tokenizer

    tok = WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)
    ref = Tokenizer(tok.tok, False, task="transcribe", language="en")
    for text in (" Ever tried. Ever failed, no matter!", " naïve café — 東京 (really) 'quoted'", " a-b c--d"):
        ids = [*tok.encode(text), tok.eot]
        for language in ("en", "ja"):
            ref.language_code = language
            assert tok.split_words(ids, language) == ref.split_to_word_tokens(ids), (text, language)


def test_punctuation_joins_its_word():
    words = [WordTiming(w, [i], float(i), float(i) + 1, 1.0) for i, w in enumerate([" (", "hi", ")", " there", "."])]
    merge_punctuations(words, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
    assert [(w.word, w.tokens) for w in words] == [("", []), (" (hi)", [0, 1, 2]), ("", []), (" there.", [3, 4]),
                                                   ("", [])]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from voxbox.convert.ct2_reader import write_hf_checkpoint
    from voxbox.engines.asr.torch_whisper.engine import load

    torch.set_num_threads(1)
    ckpt = write_hf_checkpoint(whisper_tiny_en_dir(), tmp_path_factory.mktemp("tiny_en_hf"))
    return load(str(ckpt), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def faster(engine):
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_tiny_en_dir()), device="cpu", compute_type="float32", cpu_threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_word_times_match_faster_whisper(engine, faster, moonshine_assets, name):
    audio = decode(str(moonshine_assets / name), sample_rate=16000)
    ref_segs = list(faster.transcribe(audio.samples, beam_size=1, language="en", word_timestamps=True)[0])
    segs, info = engine.transcribe(audio, beam_size=1, word_timestamps=True)
    segs = list(segs)
    assert "align" in info.timings.as_dict()
    ref = [(w.word, w.start, w.end, w.probability) for s in ref_segs for w in s.words]
    ours = [(w.word, w.start, w.end, w.probability) for s in segs for w in s.words or []]
    assert [w[0] for w in ours] == [w[0] for w in ref]
    starts = np.abs(np.array([w[1] for w in ours]) - [w[1] for w in ref])
    ends = np.abs(np.array([w[2] for w in ours]) - [w[2] for w in ref])
    # same frames, up to float rounding of the attention (one 20 ms step now and then)
    assert np.median(starts) == 0 and np.median(ends) == 0
    assert starts.max() <= 0.04 and ends.max() <= 0.04, (starts.max(), ends.max())
    assert np.allclose([w[3] for w in ours], [w[3] for w in ref], atol=0.01)
    # segment edges follow the words, as in faster-whisper
    edges = np.array([(s.start, s.end) for s in segs]) - [(s.start, s.end) for s in ref_segs]
    assert np.abs(edges).max() <= 0.04
