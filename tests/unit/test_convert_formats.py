"""Tiny random Whispers (English-only and multilingual) converted to CTranslate2 float32 and ONNX
float32: faster-whisper and onnx-whisper produce the same greedy tokens as transformers' generate."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("ctranslate2")

import torch  # noqa: E402

from voxbox.convert.tiny import bundled_tokenizer_dir  # noqa: E402
from voxbox.engines.asr.whisper import features as wf  # noqa: E402
from voxbox.types import Audio  # noqa: E402

N_NEW = 24
N_INPUTS = 3


@pytest.fixture(scope="module", params=[False, True], ids=["en", "multilingual"])
def converted(request, tmp_path_factory):
    from voxbox.convert.onnx_export import copy_files, export_onnx, load_hf_whisper, write_onnx_config
    from voxbox.convert.tiny import make_tiny_whisper
    from voxbox.convert.whisper import convert_ct2, inspect_checkpoint

    multilingual = request.param
    if bundled_tokenizer_dir(multilingual) is None:
        pytest.skip("bundled Whisper tokenizer not installed")
    root = tmp_path_factory.mktemp("ml" if multilingual else "en")
    src = make_tiny_whisper(root / "hf", multilingual=multilingual)
    ck = inspect_checkpoint(src)
    convert_ct2(ck, root / "ct2", "float32")
    info = export_onnx(src, root / "onnx")
    write_onnx_config(root / "onnx", info, ck.config, ck.generation_config, ck.special_ids, "float32")
    copy_files(ck.tokenizer_files, root / "onnx")
    return {"src": src, "ct2": root / "ct2", "onnx": root / "onnx", "hf": load_hf_whisper(src),
            "multilingual": multilingual}


@pytest.fixture(scope="module")
def onnx_engine(converted):
    from voxbox.engines.registry import load_engine

    eng = load_engine("onnx-whisper", str(converted["onnx"]), device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def fw_engine(converted):
    from voxbox.engines.registry import load_engine

    eng = load_engine("faster-whisper", str(converted["ct2"]), device="cpu", dtype="float32")
    yield eng
    eng.close()


def _noise(seed: int, seconds: float = 4.0) -> Audio:
    """Random but varied input: noise at a random level plus random tones with a random envelope."""
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    x = rng.uniform(0.005, 0.2) * rng.standard_normal(n)
    for _ in range(3):
        f, a, r = rng.uniform(80, 4000), rng.uniform(0.05, 0.4), rng.uniform(0.2, 3)
        x += a * np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * r * t))
    return Audio(x.astype(np.float32), 16000)


def _features(audio: Audio) -> np.ndarray:
    return wf.pad_or_trim(wf.log_mel(audio.samples, 80, padding=wf.CHUNK_SAMPLES)[:, : wf.CHUNK_FRAMES])


def _hf_generate(model, feats: np.ndarray, prompt: list[int], suppress: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(input_features=torch.from_numpy(feats[None]), decoder_input_ids=torch.tensor([prompt]),
                             max_new_tokens=N_NEW, do_sample=False, num_beams=1, suppress_tokens=suppress,
                             begin_suppress_tokens=None)
    toks = out[0].tolist()
    if toks[: len(prompt)] == prompt:  # some transformers versions return the prompt too
        toks = toks[len(prompt):]
    eot = model.generation_config.eos_token_id
    return toks[: toks.index(eot)] if eot in toks else toks


def test_onnx_matches_transformers_generate(converted, onnx_engine):
    eng = onnx_engine
    prompt = eng.sot_sequence("en", "transcribe", timestamps=False)
    # the engine's suppression (generation config's non-speech list + specials) plus every timestamp;
    # begin-suppression (blank, eot) is transformers' default for Whisper too
    suppress = eng.suppress_list(None) + list(range(eng.tok.timestamp_begin, eng.vocab_size))
    distinct = set()
    for seed in range(N_INPUTS):
        audio = _noise(seed, 30.0)  # a full window: no padding, so every reference loop builds the same features
        ref = _hf_generate(converted["hf"], _features(audio), prompt, suppress)
        segs, info = eng.transcribe(audio, language="en", without_timestamps=True, max_new_tokens=N_NEW)
        toks = [t for s in segs for t in s.tokens]
        assert toks == ref, f"input {seed}"
        assert len(set(ref)) > 3  # a real sequence, not one token repeated
        distinct.add(tuple(ref))
        assert set(info.timings.as_dict()) >= {"features", "encode", "decode"}
    assert len(distinct) == N_INPUTS  # the audio changes the tokens


def test_faster_whisper_matches_transformers_generate(converted, fw_engine, onnx_engine):
    prompt = onnx_engine.sot_sequence("en", "transcribe", timestamps=False)
    # CTranslate2 does not ban timestamps after <|notimestamps|> by itself: a random model emits them,
    # so they are suppressed explicitly here, exactly as for transformers
    suppress = onnx_engine.suppress_list(None) + list(range(onnx_engine.tok.timestamp_begin, onnx_engine.vocab_size))
    from faster_whisper.feature_extractor import FeatureExtractor

    for seed in range(N_INPUTS):
        # faster-whisper pads the log-mel (not the audio) of a short window with zeros, unlike openai-whisper
        # and transformers; on exactly 30 s both see the same window, so feed transformers faster-whisper's
        # own features for it
        audio = _noise(seed, 30.0)
        feats = np.ascontiguousarray(FeatureExtractor(feature_size=80)(audio.samples)[:, : wf.CHUNK_FRAMES])
        ref = _hf_generate(converted["hf"], feats, prompt, suppress)
        segs, _ = fw_engine.transcribe(audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                                       max_new_tokens=2 * N_NEW + 2, suppress_tokens=suppress,
                                       no_speech_threshold=None, condition_on_previous_text=False)
        # ctranslate2 4.8 stops Whisper generation at max_length / 2 tokens (faster-whisper passes
        # max_length = prompt + max_new_tokens), so ask for twice as many and compare N_NEW
        toks = [t for s in segs for t in s.tokens]
        assert len(toks) >= N_NEW and toks[:N_NEW] == ref[:N_NEW], f"input {seed}"


def test_onnx_timestamps_match_transformers_until_first_segment(converted, onnx_engine):
    """With timestamps on, transformers restarts decoding after each closed pair (like the engine's
    seek), so compare the first window's tokens up to the first complete timestamp pair."""
    eng = onnx_engine
    hf = converted["hf"]
    tb = eng.tok.timestamp_begin
    compared = 0
    for seed in range(N_INPUTS):
        feats = _features(_noise(seed))
        cross = eng.encode(feats)
        prompt = eng.sot_sequence("en", "transcribe", timestamps=True)
        ours, _ = eng.greedy(cross, prompt, max_new_tokens=N_NEW, timestamps=True, suppress_tokens=None)
        kw = {"language": "en", "task": "transcribe"} if converted["multilingual"] else {}
        with torch.no_grad():
            out = hf.generate(input_features=torch.from_numpy(feats[None]), return_timestamps=True,
                              max_new_tokens=N_NEW, do_sample=False, num_beams=1, **kw)
        ref = out[0].tolist()
        assert ours[0] >= tb and ref[0] >= tb  # both start with a timestamp
        pair = next((i + 2 for i in range(1, len(ours) - 1) if ours[i] >= tb and ours[i + 1] >= tb), len(ours))
        n = min(pair, len(ref))
        assert ours[:n] == ref[:n], f"input {seed}"
        compared += n
    assert compared >= N_INPUTS * 2


def test_language_detection_and_info(converted, onnx_engine):
    eng = onnx_engine
    assert eng.info.extra["execution_provider"] == "CPUExecutionProvider"
    assert eng.info.device == "cpu" and eng.info.dtype == "float32"
    audio = _noise(7, 2.0)
    segs, info = eng.transcribe(audio, max_new_tokens=8)
    list(segs)
    if converted["multilingual"]:
        assert info.language in eng.language_ids and 0 < info.language_probability <= 1
        cross = eng.encode(_features(audio))
        lang, prob, probs = eng.detect_language(cross)
        assert lang == info.language and abs(sum(probs.values()) - 1) < 1e-4
        # the detected language is the argmax of transformers' logits over the language tokens
        ids = [eng.language_ids[c] for c in probs]
        with torch.no_grad():
            logits = converted["hf"](input_features=torch.from_numpy(_features(audio)[None]),
                                     decoder_input_ids=torch.tensor([[eng.tok.sot]])).logits[0, -1].numpy()
        assert list(probs)[int(np.argmax(logits[ids]))] == lang
        assert eng.info.supports_translation
    else:
        assert info.language == "en" and eng.info.languages == ("en",)


def test_long_audio_segments_are_ordered(onnx_engine):
    segs, info = onnx_engine.transcribe(_noise(3, 40.0), language="en", max_new_tokens=12)
    segs = list(segs)
    assert info.duration == pytest.approx(40.0)
    starts = [s.start for s in segs]
    assert starts == sorted(starts) and all(s.end >= s.start for s in segs)
    assert all(0 <= s.start <= 40.5 for s in segs)


def test_onnx_engine_errors(converted, onnx_engine):
    from voxbox.errors import BadInputError, UnsupportedOperationError

    with pytest.raises(UnsupportedOperationError):
        onnx_engine.transcribe(_noise(0, 1.0), word_timestamps=True)
    with pytest.raises(BadInputError, match="unknown option"):
        onnx_engine.transcribe(_noise(0, 1.0), bogus=1)
    with pytest.raises(BadInputError):
        onnx_engine.transcribe(_noise(0, 1.0), language="xx")
    if not converted["multilingual"]:
        with pytest.raises(UnsupportedOperationError):
            onnx_engine.transcribe(_noise(0, 1.0), task="translate")
        with pytest.raises(UnsupportedOperationError, match="English-only"):
            onnx_engine.transcribe(_noise(0, 1.0), language="de")


def test_int8_outputs_load_and_run(converted, tmp_path):
    import shutil

    from voxbox.convert.onnx_export import quantize_onnx_dir
    from voxbox.convert.whisper import convert_ct2, inspect_checkpoint
    from voxbox.engines.registry import load_engine

    q = tmp_path / "onnx8"
    q.mkdir()
    quantize_onnx_dir(converted["onnx"], q)
    for f in converted["onnx"].iterdir():
        if not f.name.endswith(".onnx"):
            shutil.copy(f, q / f.name)
    cfg = (q / "voxbox_onnx.json").read_text().replace('"dtype": "float32"', '"dtype": "int8"')
    (q / "voxbox_onnx.json").write_text(cfg)
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.onnx"))  # noqa: E731
    assert size(q) < 0.6 * size(converted["onnx"])
    eng = load_engine("onnx-whisper", str(q), device="cpu")
    segs, info = eng.transcribe(_noise(1, 3.0), language="en", max_new_tokens=8)
    assert isinstance(list(segs), list) and eng.info.dtype == "int8"

    convert_ct2(inspect_checkpoint(converted["src"]), tmp_path / "ct2-int8", "int8")
    fw = load_engine("faster-whisper", str(tmp_path / "ct2-int8"), device="cpu", dtype="int8")
    segs, _ = fw.transcribe(_noise(1, 3.0), language="en", beam_size=1, max_new_tokens=8)
    list(segs)
    fw.close()


def test_pick_providers():
    from voxbox.engines.asr.onnx_whisper import pick_providers
    from voxbox.errors import BadInputError, DeviceError

    cpu = ["CPUExecutionProvider"]
    assert pick_providers("auto", cpu) == ("cpu", 0, cpu)
    kind, idx, prov = pick_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (kind, idx, prov[0][0]) == ("cuda", 0, "CUDAExecutionProvider")
    kind, idx, prov = pick_providers("rocm:1", ["MIGraphXExecutionProvider", "CPUExecutionProvider"])
    assert (kind, idx, prov[0]) == ("migraphx", 1, ("MIGraphXExecutionProvider", {"device_id": 1}))
    assert pick_providers("auto", ["ROCMExecutionProvider", "CPUExecutionProvider"])[0] == "rocm"
    with pytest.raises(DeviceError, match="no CUDAExecutionProvider"):
        pick_providers("cuda", cpu)
    with pytest.raises(BadInputError):
        pick_providers("tpu", cpu)


def test_external_data_layout_for_big_graphs(converted, onnx_engine, tmp_path, monkeypatch):
    """Graphs over protobuf's 2 GiB keep their weights in one ``<graph>.onnx.data`` file; forced
    here with a 1-byte threshold, the tiny model must decode exactly as the inline export."""
    if converted["multilingual"]:
        pytest.skip("one vocabulary is enough for the file layout")
    from voxbox.convert import onnx_export
    from voxbox.engines.registry import load_engine

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1)
    out = tmp_path / "ext"
    info = onnx_export.export_onnx(converted["src"], out)
    names = {p.name for p in out.iterdir()}
    assert names == {"encoder.onnx", "encoder.onnx.data", "decoder.onnx", "decoder.onnx.data"}
    assert (out / "decoder.onnx").stat().st_size < 1_000_000 < (out / "decoder.onnx.data").stat().st_size
    for f in converted["onnx"].iterdir():
        if not f.name.endswith(".onnx"):
            (out / f.name).write_bytes(f.read_bytes())
    eng = load_engine("onnx-whisper", str(out), device="cpu")
    audio = _noise(5)
    a, _ = eng.transcribe(audio, language="en", max_new_tokens=10)
    b, _ = onnx_engine.transcribe(audio, language="en", max_new_tokens=10)
    assert [s.tokens for s in a] == [s.tokens for s in b]
    q = tmp_path / "ext8"
    q.mkdir()
    onnx_export.quantize_onnx_dir(out, q)
    assert any(p.name != "encoder.onnx" and p.name != "decoder.onnx" for p in q.iterdir())  # external data
    for f in converted["onnx"].iterdir():
        if not f.name.endswith(".onnx"):
            (q / f.name).write_bytes(f.read_bytes())
    segs, _ = load_engine("onnx-whisper", str(q), device="cpu").transcribe(audio, language="en", max_new_tokens=6)
    list(segs)
    assert info["n_layers"] == 2
