"""The newest ``voxbox bench`` results under a directory, summarised for the web page.

``voxbox bench`` writes ``results.json`` (plus ``results.md`` and PNG charts) into one directory
per run (default ``./bench-results/TASK-TIMESTAMP``). :class:`BenchIndex` finds those files (a
few levels deep), keeps the newest run per task, and hands out its charts by run id and file
name — looked up in what it found, never joined from the request onto the file system.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxbox.errors import NotFoundError

__all__ = ["BenchIndex"]

log = logging.getLogger("voxbox.server")

#: How deep below the root ``results.json`` files are looked for.
_MAX_DEPTH = 4
#: Larger result files are skipped (a full run is ~100 KB).
_MAX_BYTES = 32 * 1024 * 1024
#: Directories scanned at most (a misconfigured root like ``/`` must not walk the disk).
_MAX_DIRS = 2000


@dataclass
class _Run:
    run_id: str
    directory: Path
    mtime: float
    summary: dict[str, Any]
    charts: tuple[str, ...]


class BenchIndex:
    """Scans ``root`` on each call (cheap: a few stats), re-parsing only files that changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parsed: dict[Path, _Run] = {}
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        out: list[Path] = []
        todo = [(self.root, 0)]
        seen = 0
        while todo and seen < _MAX_DIRS:
            d, depth = todo.pop()
            seen += 1
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for p in entries:
                if p.name == "results.json" and p.is_file():
                    out.append(p)
                elif depth < _MAX_DEPTH and p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
                    todo.append((p, depth + 1))
        return out

    def _load(self, path: Path) -> _Run | None:
        try:
            st = path.stat()
            if st.st_size > _MAX_BYTES:
                return None
            cached = self._parsed.get(path)
            if cached is not None and cached.mtime == st.st_mtime:
                return cached
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable bench results %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("tool") != "voxbox bench" or "task" not in data:
            return None
        run_id = path.parent.relative_to(self.root).as_posix() or "."
        charts = tuple(sorted(p.name for p in path.parent.glob("*.png") if p.is_file()))
        run = _Run(run_id, path.parent, st.st_mtime, summarise(data, run_id, charts), charts)
        self._parsed[path] = run
        return run

    def _runs(self) -> list[_Run]:
        with self._lock:
            runs = [r for r in (self._load(p) for p in self._files()) if r is not None]
        return runs

    def latest(self) -> list[dict[str, Any]]:
        """The newest run per task (by its ``created`` time), TTS first."""
        best: dict[str, _Run] = {}
        for run in self._runs():
            task = str(run.summary["task"])
            cur = best.get(task)
            if cur is None or (run.summary.get("created") or "", run.mtime) > (
                cur.summary.get("created") or "",
                cur.mtime,
            ):
                best[task] = run
        return [best[t].summary for t in sorted(best, key=lambda t: (t != "tts", t))]

    def chart(self, run_id: str, name: str) -> Path:
        for run in self._runs():
            if run.run_id == run_id and name in run.charts:
                return run.directory / name
        raise NotFoundError(f"no chart {name!r} in bench run {run_id!r}", param="name")


def summarise(data: dict[str, Any], run_id: str, charts: tuple[str, ...]) -> dict[str, Any]:
    """What the page shows of one results.json: who/when/where, targets, totals, per-row medians."""
    rows = []
    for r in data.get("rows") or []:
        s = r.get("summary") or {}
        rows.append({
            "target": r.get("target"), "scenario": r.get("scenario"), "steps": r.get("steps"),
            "concurrency": r.get("concurrency"), "status": r.get("status"), "error": r.get("error"),
            "audio_s": s.get("audio_s"), "total_s": s.get("total_s"), "rtf": s.get("rtf"),
            "ttfa_s": s.get("ttfa_s"), "stages": s.get("stages"),
            "wer": (r.get("quality") or {}).get("wer"), "time_ratio_to_voxbox": r.get("time_ratio_to_voxbox"),
        })
    targets = [{k: t.get(k) for k in ("id", "kind", "status", "reason", "device", "dtype", "threads", "load_s",
                                      "first_call_s", "peak_rss_bytes", "peak_gpu_bytes", "peer_of")}
               for t in data.get("targets") or []]
    machine = data.get("machine") or {}
    return {
        "id": run_id,
        "task": data.get("task"),
        "created": data.get("created"),
        "mode": data.get("mode"),
        "quick": data.get("quick"),
        "command": data.get("command"),
        "voxbox_version": data.get("voxbox_version"),
        "machine": {k: machine.get(k) for k in ("cpu", "cpu_count", "memory_bytes", "os", "gpus", "python")},
        "runs_per_scenario": (data.get("settings") or {}).get("runs"),
        "targets": targets,
        "totals": data.get("totals") or [],
        "rows": rows,
        "charts": list(charts),
    }
