"""voxbox convert: argument and checkpoint checks, manifest hashing, WER, features (fast, no conversion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxbox.convert.manifest import checkpoint_sha256
from voxbox.convert.pipeline import check_args
from voxbox.convert.verify import wer
from voxbox.convert.whisper import inspect_checkpoint, prepare_output_dir
from voxbox.engines.asr.whisper import features as wf
from voxbox.errors import BadInputError, NotFoundError


def _fake_ckpt(d: Path, *, model_type: str = "whisper", weights: bool = True, tokenizer: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": 51864}))
    if weights:
        (d / "model.safetensors").write_bytes(b"\0" * 16)
    if tokenizer:
        (d / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 50256, "content": "<|endoftext|>"}]}))
    return d


def test_inspect_accepts_whisper_dir(tmp_path):
    ck = inspect_checkpoint(_fake_ckpt(tmp_path / "ok"))
    assert ck.special_ids["<|endoftext|>"] == 50256
    assert not ck.is_multilingual
    assert {p.name for p in ck.files_for_hash()} == {"config.json", "model.safetensors", "tokenizer.json"}


@pytest.mark.parametrize("case, exc, words", [
    ("missing", NotFoundError, "does not exist"),
    ("file", BadInputError, "not a directory"),
    ("no_config", BadInputError, "no config.json"),
    ("bert", BadInputError, "model_type 'bert'"),
    ("no_weights", BadInputError, "no model*.safetensors"),
    ("no_tokenizer", BadInputError, "has no tokenizer"),
])
def test_inspect_errors(tmp_path, case, exc, words):
    p = tmp_path / case
    if case == "file":
        p.write_text("x")
    elif case == "no_config":
        p.mkdir()
        (p / "model.bin").write_bytes(b"x")
    elif case == "bert":
        _fake_ckpt(p, model_type="bert")
    elif case == "no_weights":
        _fake_ckpt(p, weights=False)
    elif case == "no_tokenizer":
        _fake_ckpt(p, tokenizer=False)
    with pytest.raises(exc) as ei:
        inspect_checkpoint(p)
    msg = str(ei.value)
    assert words in msg and "\n" not in msg


def test_slow_tokenizer_files_are_enough(tmp_path):
    d = _fake_ckpt(tmp_path / "slow", tokenizer=False)
    (d / "vocab.json").write_text("{}")
    (d / "merges.txt").write_text("")
    assert not inspect_checkpoint(d).has_fast_tokenizer


@pytest.mark.parametrize(
    "to, q, expect",
    [
        ("ct2", None, ("ct2", "float16")), ("CT2", "INT8", ("ct2", "int8")),
        ("ct2", "int8_bfloat16", ("ct2", "int8_bfloat16")), ("onnx", None, ("onnx", "float32")),
        ("onnx", "int8", ("onnx", "int8")),
    ],
)
def test_check_args_ok(to, q, expect):
    assert check_args(to, q, 0.05) == expect


@pytest.mark.parametrize("to, q, max_wer, words", [
    ("tflite", None, 0.05, "unknown target"),
    ("ct2", "int4", 0.05, "unknown quantization 'int4' for --to ct2"),
    ("onnx", "float16", 0.05, "unknown quantization 'float16' for --to onnx"),
    ("ct2", None, -0.1, "--max-wer"),
])
def test_check_args_errors(to, q, max_wer, words):
    with pytest.raises(BadInputError, match=words.replace("*", r"\*")):
        check_args(to, q, max_wer)


def test_output_dir_rules(tmp_path):
    src = _fake_ckpt(tmp_path / "src")
    out = tmp_path / "out"
    assert prepare_output_dir(out, force=False, src=src) == out
    out.mkdir()
    (out / "old").write_text("x")
    with pytest.raises(BadInputError, match="already exists; pass --force"):
        prepare_output_dir(out, force=False, src=src)
    prepare_output_dir(out, force=True, src=src)
    assert not out.exists()
    with pytest.raises(BadInputError, match="must not be"):
        prepare_output_dir(src / "inside", force=True, src=src)


def test_checkpoint_hash_is_location_independent(tmp_path):
    a = _fake_ckpt(tmp_path / "a")
    b = _fake_ckpt(tmp_path / "b")

    def files(d):
        return sorted(d.iterdir())

    assert checkpoint_sha256(a, files(a)) == checkpoint_sha256(b, files(b))
    (b / "model.safetensors").write_bytes(b"\1" * 16)
    assert checkpoint_sha256(a, files(a)) != checkpoint_sha256(b, files(b))


def test_wer():
    assert wer(["a b c d"], ["a b c d"]) == 0.0
    assert wer(["a b c d"], ["a x c"]) == pytest.approx(0.5)
    assert wer(["Hello world."], ["hello world"]) == 0.0
    assert wer([""], [""]) == 0.0
    assert wer([""], ["noise"]) == 1.0


def test_numpy_log_mel_matches_transformers():
    fe_mod = pytest.importorskip("transformers.models.whisper.feature_extraction_whisper")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 7) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    fe = fe_mod.WhisperFeatureExtractor(feature_size=80)
    ref = fe(x, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = wf.pad_or_trim(wf.log_mel(np.pad(x, (0, wf.CHUNK_SAMPLES - x.size)), 80))
    assert ours.shape == ref.shape == (80, 3000)
    assert np.abs(ours - ref).max() < 2e-3
    assert wf.log_mel(x, 128).shape[0] == 128
