"""A model file that is not what the engine expects (corrupt, truncated, another model, a config of
the wrong shape) is a ModelLoadError with a clear message — never a backend exception (issue #12,
part 3). Each case copies a real model into a tmp dir and breaks one file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from voxbox.engines.registry import load_engine
from voxbox.errors import BadInputError, ModelLoadError

GARBAGE = np.random.default_rng(5).bytes(4096)


def _hibari_onnx() -> Path:
    from voxbox.models.bundled import BUNDLES, package_dir

    return package_dir(BUNDLES["hibari"]) / "hibari.onnx"


def _expect_load_error(engine: str, model: Path, *words: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as ei:
        load_engine(engine, str(model), device="cpu")
    msg = str(ei.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return ei.value


# --------------------------------------------------------------------------------------------
# hibari and piper (ONNX Runtime)


@pytest.mark.parametrize("content", ["garbage", "empty", "piper-model"])
def test_hibari_bad_onnx(tmp_path, content):
    from voxbox.models.bundled import piper_joe_paths

    p = tmp_path / "voice.onnx"
    p.write_bytes({"garbage": GARBAGE, "empty": b"", "piper-model": piper_joe_paths()[0].read_bytes()}[content])
    err = _expect_load_error("hibari", p, "hibari", str(p))
    assert err.__cause__ is not None


def _piper_dir(tmp_path: Path, onnx: bytes | None = None, config: str | None = None) -> Path:
    from voxbox.models.bundled import piper_joe_paths

    src_onnx, src_cfg = piper_joe_paths()
    target = tmp_path / "my-voice.onnx"
    if onnx is None:
        target.symlink_to(src_onnx)
    else:
        target.write_bytes(onnx)
    (tmp_path / "my-voice.onnx.json").write_text(src_cfg.read_text() if config is None else config)
    return target


@pytest.mark.parametrize("case", ["garbage-onnx", "empty-onnx", "hibari-onnx"])
def test_piper_bad_onnx(tmp_path, case):
    onnx = {"garbage-onnx": GARBAGE, "empty-onnx": b"", "hibari-onnx": _hibari_onnx().read_bytes()}[case]
    _expect_load_error("piper", _piper_dir(tmp_path, onnx=onnx), "Piper voice")


@pytest.mark.parametrize("config", ["{not json", "[]", "{}", "null"])
def test_piper_bad_config(tmp_path, config):
    _expect_load_error("piper", _piper_dir(tmp_path, config=config), "Piper config")


def test_piper_config_with_wrong_types(tmp_path):
    from voxbox.models.bundled import piper_joe_paths

    cfg = json.loads(piper_joe_paths()[1].read_text())
    cfg["audio"] = "x"
    cfg["num_speakers"] = "two"
    _expect_load_error("piper", _piper_dir(tmp_path, config=json.dumps(cfg)), "Piper config")


def test_piper_good_local_voice_still_loads(tmp_path):
    """Negative control: the load-time check passes a real voice."""
    engine = load_engine("piper", str(_piper_dir(tmp_path)), device="cpu")
    assert engine.synthesize("Fine.").duration > 0.2


# --------------------------------------------------------------------------------------------
# faster-whisper (CTranslate2 directory)


def _ct2_copy(tmp_path: Path, name: str, content: bytes) -> Path:
    from voxbox.models.bundled import whisper_tiny_en_dir

    d = tmp_path / "ct2"
    shutil.copytree(whisper_tiny_en_dir(), d)
    (d / name).write_bytes(content)
    return d


@pytest.mark.parametrize("name,content", [
    ("model.bin", GARBAGE), ("model.bin", b""), ("config.json", b"{nope"), ("tokenizer.json", b"{nope"),
    ("tokenizer.json", b"{}"),
])
def test_faster_whisper_corrupt_files(tmp_path, name, content):
    _expect_load_error("faster-whisper", _ct2_copy(tmp_path, name, content), "faster-whisper")


def test_faster_whisper_truncated_model_bin(tmp_path):
    from voxbox.models.bundled import whisper_tiny_en_dir

    data = (whisper_tiny_en_dir() / "model.bin").read_bytes()
    _expect_load_error("faster-whisper", _ct2_copy(tmp_path, "model.bin", data[: len(data) // 3]), "faster-whisper")


def test_faster_whisper_bad_dtype_is_still_bad_input():
    with pytest.raises(BadInputError) as ei:
        load_engine("faster-whisper", device="cpu", dtype="float16")
    assert ei.value.param == "dtype"


# --------------------------------------------------------------------------------------------
# onnx-whisper and torch-whisper directories


def test_onnx_whisper_corrupt_graph_and_config(tmp_path):
    pytest.importorskip("onnxruntime")
    d = tmp_path / "onnx"
    d.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        (d / name).write_bytes(GARBAGE)
    (d / "tokenizer.json").write_text("{}")
    (d / "voxbox_onnx.json").write_text("[]")
    _expect_load_error("onnx-whisper", d, "voxbox_onnx.json")
    (d / "voxbox_onnx.json").write_text(json.dumps({"vocab_size": 51864, "params": 1}))
    _expect_load_error("onnx-whisper", d, "ONNX")


@pytest.mark.parametrize("broken", ["config", "safetensors", "tokenizer"])
def test_torch_whisper_corrupt_checkpoint(tmp_path, broken):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    d = tmp_path / "hf"
    d.mkdir()
    cfg = {"d_model": 8, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
           "decoder_attention_heads": 2, "num_mel_bins": 80, "vocab_size": 51864, "max_source_positions": 4,
           "max_target_positions": 4}
    (d / "config.json").write_text("[1, 2]" if broken == "config" else json.dumps(cfg))
    if broken == "safetensors":
        (d / "model.safetensors").write_bytes(GARBAGE)
    else:
        save_file({"x": np.zeros(2, np.float32)}, str(d / "model.safetensors"))
    (d / "tokenizer.json").write_text("{nope" if broken == "tokenizer" else "{}")
    _expect_load_error("torch-whisper", d, "hf")
