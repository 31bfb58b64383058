"""The output of a batch job: one record per input, keyed, resumable.

* ``.jsonl``: records are appended to OUT as they arrive (flushed each time), so whatever finished
  before an interruption is in OUT. When a run replaced records (retried failures), OUT is
  rewritten at the end with the last record per key.
* ``.parquet``: records are appended to a journal beside it (``OUT.partial.jsonl``); at the end OUT is
  rewritten (atomically) with its old records and the journal's, and the journal removed. A run
  that was interrupted leaves the journal, and the next run reads it as done work.

A record with ``error`` set is a failure: it is kept (with the error) but does not count as done,
so a re-run tries that input again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

from voxbox.errors import BadInputError

__all__ = ["ResultStore"]

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class ResultStore:
    def __init__(self, out: Path, key: str) -> None:
        fmt = _FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise BadInputError(f"--out {out}: the output must end in .jsonl or .parquet", param="out")
        if out.is_dir():
            raise BadInputError(f"--out {out} is a directory; give a .jsonl or .parquet file", param="out")
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise BadInputError(f"cannot write {out}: folder {parent} does not exist", param="out")
        if fmt == "parquet":
            _pyarrow()
        self.out, self.key, self.format = out, key, fmt
        self.journal = out.with_name(out.name + ".partial.jsonl") if fmt == "parquet" else out
        self.rows: dict[str, dict[str, Any]] = {}
        self._replaced = False
        if fmt == "parquet" and out.is_file():
            for row in _read_parquet(out):
                self.rows[str(row.get(key))] = row
        if self.journal.is_file():
            self._load_jsonl(self.journal)
        self._fh: TextIO | None = None
        self.written = 0

    def _load_jsonl(self, path: Path) -> None:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # a record cut by an interruption: drop it (that input is redone)
                    _truncate_to_last_line(path)
                    continue
                raise BadInputError(f"{path}:{n + 1}: not a voxbox batch record; choose another --out",
                                    param="out") from None
            if not isinstance(row, dict) or self.key not in row:
                raise BadInputError(f"{path}:{n + 1}: not a voxbox batch record (no {self.key!r}); choose another "
                                    f"--out", param="out")
            k = str(row[self.key])
            self._replaced |= k in self.rows
            self.rows[k] = row

    def done(self) -> set[str]:
        """Keys with a successful record."""
        return {k for k, r in self.rows.items() if r.get("error") is None}

    def write(self, record: dict[str, Any]) -> None:
        k = str(record[self.key])
        self._replaced |= k in self.rows
        self.rows[k] = record
        if self._fh is None:
            self._fh = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - appended to until close()
            if self.journal.stat().st_size > 0 and not _ends_with_newline(self.journal):
                self._fh.write("\n")
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_plain) + "\n")
        self._fh.flush()
        self.written += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finish(self) -> None:
        """Write the final OUT (Parquet, or a JSONL whose records were replaced) and close."""
        self.close()
        rows = list(self.rows.values())
        if self.format == "parquet":
            if self.written or not self.out.is_file() or self.journal.is_file():
                _write_parquet(self.out, rows)
            self.journal.unlink(missing_ok=True)
        elif self._replaced:
            text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=_plain) + "\n"
                           for r in rows)
            _atomic_write(self.out, text.encode("utf-8"))


def _truncate_to_last_line(path: Path) -> None:
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and other simple values a manifest may carry."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return str(value)


def _pyarrow() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError:
        raise BadInputError("Parquet output needs pyarrow (pip install pyarrow), or use a .jsonl --out",
                            param="out") from None
    return pyarrow


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"--out {path} exists but is not a readable Parquet file "
                            f"({' '.join(str(exc).split())[:160]})", param="out") from None


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    pa = _pyarrow()
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    columns: dict[str, list[Any]] = {}
    for r in rows:
        for k in r:
            columns.setdefault(k, [])
    table = pa.table({k: [r.get(k) for r in rows] for k in columns})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
