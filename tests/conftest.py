"""Shared fixtures: bundled human recordings and known texts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _moonshine_assets() -> Path | None:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "assets"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def moonshine_assets() -> Path:
    p = _moonshine_assets()
    if p is None:
        pytest.fail("moonshine-voice is not installed (pip install -e '.[test]')")
    return p

