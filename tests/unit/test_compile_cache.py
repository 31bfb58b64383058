"""torch.compile's on-disk caches go to voxbox's cache dir (so a second start reuses the kernels)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxbox.engines.compile_cache import compile_cache_dir, persist_compile_cache

VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VOXBOX_COMPILE_CACHE", raising=False)
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def test_unset_variables_point_into_the_voxbox_cache(clean_env: Path) -> None:
    got = persist_compile_cache()
    assert compile_cache_dir() == clean_env / "compile"
    assert got == {"TORCHINDUCTOR_CACHE_DIR": str(clean_env / "compile" / "inductor"),
                   "TRITON_CACHE_DIR": str(clean_env / "compile" / "triton")}
    for var in VARS:
        assert os.environ[var] == got[var] and Path(got[var]).is_dir()


def test_the_users_choice_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    got = persist_compile_cache()
    assert got["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    assert got["TRITON_CACHE_DIR"] == str(clean_env / "compile" / "triton")


def test_turned_off_leaves_torch_defaults(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXBOX_COMPILE_CACHE", "0")
    assert persist_compile_cache() == {}
    assert not any(os.environ.get(v) for v in VARS)
    assert not (clean_env / "compile").exists()


def test_loading_a_torch_engine_sets_the_cache(clean_env: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from voxbox.convert.tiny import make_tiny_whisper
    from voxbox.engines.registry import load_engine

    model = make_tiny_whisper(tmp_path / "tiny")
    engine = load_engine("torch-whisper", str(model), device="cpu")
    try:
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(clean_env / "compile" / "inductor")
    finally:
        engine.close()
