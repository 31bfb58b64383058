"""Progress of a batch job on stderr: a bar while it runs (only on a terminal), one summary line at the end."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["JobProgress"]


class JobProgress:
    """Files done/total, failures, audio hours and x-realtime (audio seconds per wall second)."""

    def __init__(self, console: Any, total: int, skipped: int, verb: str) -> None:
        self.console = console
        self.total, self.skipped, self.verb = total, skipped, verb
        self.done = self.failed = 0
        self.audio_s = 0.0
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> JobProgress:
        if self.console.is_terminal and self.total:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self._describe(), total=self.total)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    @property
    def elapsed(self) -> float:
        return max(1e-9, time.perf_counter() - self.t0)

    @property
    def realtime(self) -> float:
        return self.audio_s / self.elapsed

    def update(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record.get("error") is not None:
            self.failed += 1
        self.audio_s += float(record.get("duration") or 0.0)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=self._describe())

    def _describe(self) -> str:
        return (f"{self.verb}: {self.failed} failed, {self.audio_s / 3600:.3f} h audio, "
                f"{self.realtime:.1f}x realtime")

    def summary(self) -> str:
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (f"{self.verb} {self.done - self.failed} of {self.done} file(s) ({self.failed} failed{skipped}): "
                f"{self.audio_s / 3600:.3f} h of audio in {self.elapsed:.1f} s, {self.realtime:.1f}x realtime "
                f"(audio hours per hour)")
