"""A real headless Chromium (Debian's ``chromium``, driven by Playwright's Python package; no browser
download) against real ``voxbox serve`` instances on 127.0.0.1.

Without Chromium or Playwright these tests are skipped, unless ``VOXBOX_REQUIRE_BROWSER=1`` (set by
``.ci/run``), which turns the skip into a failure. Screenshots go to ``VOXBOX_UI_SCREENSHOTS`` (a
directory) or a temporary directory printed at the end of the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_harness import CHROMIUM_ARGS, chromium_path
from server_harness import REPO, RunningServer, make_settings


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no system Chromium (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: Playwright's sync API marks an asyncio loop as running on the main
    thread while it is started, which breaks every later ``asyncio.run`` in the session."""
    reason = _unavailable()
    if reason:
        if os.environ.get("VOXBOX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (VOXBOX_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    configured = os.environ.get("VOXBOX_UI_SCREENSHOTS")
    out = Path(configured) if configured else tmp_path_factory.mktemp("ui-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nweb page screenshots: {out}")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    """One server for the module: bundled models preloaded, the repository's bench results."""
    settings = make_settings(tmp_path_factory.mktemp("web"), bench_dir=REPO / "bench" / "results")
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()
