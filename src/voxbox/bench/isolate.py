"""Jobs in child processes: one ``python -m voxbox.bench.runner JOB RESULT`` per target.

A child's progress comes back as marked lines on its stdout (``PROGRESS_MARK`` + JSON); control
events (``ready``, ``turn_done``) drive interleaving, where the parent hands out turns run by run.
A child that crashes, hangs past its timeout or is not installed becomes a target record with a
reason, never a lost bench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from voxbox.bench.runner import PROGRESS_MARK, Emit, empty_record

__all__ = ["run_job_isolated", "run_jobs_interleaved"]


def _error_result(job: dict[str, Any], reason: str) -> dict[str, Any]:
    record = empty_record(job["target"])
    record["status"], record["reason"] = "error", reason
    return {"target": record, "rows": []}


class _Worker:
    """One job in a child process; its progress events go to ``emit``, control events to a queue."""

    CONTROL = ("ready", "turn_done")

    def __init__(self, job: dict[str, Any], emit: Emit, log_path: Path | None, interleaved: bool) -> None:
        import queue
        import threading

        self.job = job
        self.emit = emit
        self.log_path = log_path
        self.dead = False
        self.tmp = tempfile.TemporaryDirectory(prefix="voxbox-bench-job-")
        self.job_path = Path(self.tmp.name) / "job.json"
        self.result_path = Path(self.tmp.name) / "result.json"
        self.job_path.write_text(json.dumps({**job, "isolated": True, "interleaved": interleaved}), encoding="utf-8")
        self.log = open(log_path, "wb") if log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxbox.bench.runner", str(self.job_path), str(self.result_path)],
            stdin=subprocess.PIPE if interleaved else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log or subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.control: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(PROGRESS_MARK):
                try:
                    event = json.loads(line[len(PROGRESS_MARK):])
                except json.JSONDecodeError:
                    continue
                if event.get("event") in self.CONTROL:
                    self.control.put(event)
                else:
                    self.emit(event)
            elif self.log:
                self.log.write(raw)
        self.control.put(None)

    def wait_for(self, kind: str) -> dict[str, Any] | None:
        while not self.dead:
            event = self.control.get()
            if event is None:
                self.dead = True
            elif event.get("event") == kind:
                return event
        return None

    def go(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.dead = True

    def finish(self, timeout: float | None = None) -> dict[str, Any]:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.reader.join(timeout=5)
            if self.log:
                self.log.close()
            self.tmp.cleanup()
            return _error_result(self.job, f"timed out after {timeout:.0f} s (target timeout); no rows kept")
        self.reader.join(timeout=5)
        if self.log:
            self.log.close()
        try:
            if self.result_path.exists():
                return json.loads(self.result_path.read_text(encoding="utf-8"))
            tail = ""
            if self.log_path and self.log_path.exists():
                lines = self.log_path.read_text(errors="replace").strip().splitlines()
                tail = lines[-1] if lines else ""
            return _error_result(self.job, f"bench worker exited with code {rc}" + (f": {tail}" if tail else ""))
        finally:
            self.tmp.cleanup()


def run_job_isolated(job: dict[str, Any], emit: Emit | None = None, log_path: Path | None = None,
                     timeout: float | None = None) -> dict[str, Any]:
    """``run_job`` in a fresh ``python -m voxbox.bench.runner`` process; progress comes back as events."""
    return _Worker(job, emit or (lambda e: None), log_path, interleaved=False).finish(timeout)


def run_jobs_interleaved(
    first: tuple[dict[str, Any], Emit, Path | None],
    others: Callable[[dict[str, Any]], list[tuple[dict[str, Any], Emit, Path | None]]],
) -> list[dict[str, Any]]:
    """Jobs over the same items, each in its own process, taking turns run by run.

    ``first`` (voxbox) loads and warms up alone; ``others(ready)`` then builds the other jobs
    from what it reported (device, dtype, threads, model directory), and each loads and warms up
    in turn, so cold loads do not contend. Measured runs then alternate A, B, A, B ... so a
    change in machine load between minutes hits every target alike. Used to compare voxbox
    with the library it wraps.
    """
    job, emit, log_path = first
    lead = _Worker(job, emit, log_path, interleaved=True)
    ready = lead.wait_for("ready") or {}
    workers = [lead]
    for job, emit, log_path in others(ready):
        w = _Worker(job, emit, log_path, interleaved=True)
        w.wait_for("ready")  # None: it failed or is not installed; finish() reports why
        workers.append(w)
    turns = [sum(int(i["runs"]) for i in w.job["items"]) for w in workers]
    for k in range(max(turns, default=0)):
        for w, n in zip(workers, turns, strict=False):
            if not w.dead and k < n:
                w.go()
                w.wait_for("turn_done")
    return [w.finish() for w in workers]
