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


# ---------------------------------------------------------------------------------- bytecode
# Each case runs in a child interpreter: sys.pycache_prefix changes every later import of a process.
_CHILD = """
import json, sys
from voxbox.engines.compile_cache import persist_bytecode_cache, startup_caches
before = startup_caches("fakepkg")["bytecode"]
got = persist_bytecode_cache("fakepkg")
import fakepkg
print(json.dumps({"got": got, "prefix": sys.pycache_prefix, "file": fakepkg.__file__, "before": before,
                  "after": startup_caches("fakepkg")["bytecode"]}))
"""


def _run_child(tmp_path: Path, env: dict[str, str]) -> dict:
    import json
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHE",
                                                                      "VOXBOX_"))}
    base.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), src]),
                VOXBOX_CACHE_DIR=str(tmp_path / "cache"), **env)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=base, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def fakepkg(tmp_path: Path) -> Path:
    pkg = tmp_path / "site" / "fakepkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    return pkg


def test_a_package_without_bytecode_gets_it_in_the_voxbox_cache(fakepkg: Path, tmp_path: Path) -> None:
    # PYTHONDONTWRITEBYTECODE=1 with no __pycache__: what an image built with --no-compile looks like
    for _ in range(2):  # the second start finds the bytecode the first one wrote
        got = _run_child(tmp_path, {"PYTHONDONTWRITEBYTECODE": "1"})
        assert got["got"] == got["prefix"] == str(tmp_path / "cache" / "pycache")
        assert got["before"].startswith("NOT cached") and got["after"].startswith("kept in voxbox's cache")
    assert not (fakepkg / "__pycache__").exists()  # the source tree is never written
    cached = list((tmp_path / "cache" / "pycache").rglob("fakepkg/__init__*.pyc"))
    assert len(cached) == 1


def test_bytecode_next_to_the_source_or_turned_off_leaves_python_alone(fakepkg: Path, tmp_path: Path) -> None:
    import py_compile

    assert _run_child(tmp_path, {"PYTHONDONTWRITEBYTECODE": "1", "VOXBOX_BYTECODE_CACHE": "0"})["prefix"] is None
    assert _run_child(tmp_path, {})["got"] is None  # writable: Python writes __pycache__ itself
    assert (fakepkg / "__pycache__").is_dir()
    py_compile.compile(str(fakepkg / "__init__.py"))
    got = _run_child(tmp_path, {"PYTHONDONTWRITEBYTECODE": "1"})  # installed with bytecode
    assert got["got"] is None and got["prefix"] is None and got["after"] == "installed with fakepkg"
    assert not (tmp_path / "cache" / "pycache").exists()
