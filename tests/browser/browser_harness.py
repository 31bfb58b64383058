"""Helpers for the browser tests: Chromium flags, viewports, a page that records its own errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["API_KEY", "CHROMIUM_ARGS", "DESKTOP", "PHONE", "PageWatch", "chromium_path", "new_page"]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
API_KEY = "sk-browser-test-7f3a"


def chromium_path() -> str | None:
    """The system Chromium: $VOXBOX_CHROMIUM, Debian's /usr/bin/chromium, or one on PATH."""
    for cand in (os.environ.get("VOXBOX_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file():
            return cand
    return None


class PageWatch:
    """Collects what the page says went wrong: uncaught errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and ("Content Security Policy" in msg.text or "Refused to" in msg.text):
            self.errors.append(f"csp: {msg.text}")

    def check(self) -> None:
        assert not self.errors, self.errors


def new_page(browser: Any, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Any, PageWatch]:
    context = browser.new_context(viewport=viewport, color_scheme="light", reduced_motion="reduce")
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page, PageWatch(page)
