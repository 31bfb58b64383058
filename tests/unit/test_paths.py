"""Cache and data directories come from one module (voxbox.paths) and honour XDG."""

from __future__ import annotations

from pathlib import Path

from voxbox import paths
from voxbox.bench import scenarios
from voxbox.hardware import probe
from voxbox.models import bundled
from voxbox.server.settings import default_data_dir


def test_cache_dir_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VOXBOX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "voxbox"
    assert bundled.cache_dir() == probe.cache_dir() == paths.cache_dir()
    assert scenarios.clip_cache_dir() == tmp_path / "xdg" / "voxbox" / "bench" / "clips"
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path / "own"))
    assert paths.cache_dir() == tmp_path / "own"
    monkeypatch.delenv("VOXBOX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says: ignore relative paths
    assert paths.cache_dir() == Path.home() / ".cache" / "voxbox"


def test_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert paths.data_dir() == default_data_dir() == tmp_path / "data" / "voxbox"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.data_dir() == Path.home() / ".local" / "share" / "voxbox"
