"""What a batch job reads: audio files (a folder, a glob, a manifest) or a speech manifest.

Manifests are JSONL, CSV or Parquet. A transcription manifest names its audio in a ``path`` column
(``--path-column``); relative paths are relative to the manifest's folder. A speech manifest has a
``text`` column and optionally ``id`` (the output file's name; default: the row number), ``voice``
(a voice name of the engine) and ``reference`` / ``reference_text`` (a clip to clone, for engines
that can). Other columns are copied to the output records unchanged.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxbox.errors import BadInputError

__all__ = ["AUDIO_SUFFIXES", "MANIFEST_SUFFIXES", "AudioItem", "SpeakItem", "audio_items", "read_rows", "speak_items"]

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".wma",
                            ".aiff", ".aif"})
MANIFEST_SUFFIXES = frozenset({".jsonl", ".ndjson", ".csv", ".parquet"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True)
class AudioItem:
    key: str  # the path as the output records it (what resume matches on)
    path: str  # where to read it
    extra: dict[str, Any] = field(default_factory=dict)  # manifest columns copied to the record


@dataclass(frozen=True)
class SpeakItem:
    id: str
    text: str
    voice: str | None = None
    reference: str | None = None
    reference_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL, CSV or Parquet manifest (one-line errors naming the line)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInputError(f"no such manifest: {path}", param="input")
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInputError(f"{path}:{n}: not JSON ({exc.msg})", param="input") from None
                if not isinstance(row, dict):
                    raise BadInputError(f"{path}:{n}: each line must be a JSON object", param="input")
                rows.append(row)
        return rows
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError:
            raise BadInputError(
                "reading a Parquet manifest needs pyarrow (pip install pyarrow)", param="input"
            ) from None
        try:
            return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - pyarrow's many error types
            raise BadInputError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})",
                                param="input") from None
    raise BadInputError(f"{path}: a manifest must be .jsonl, .csv or .parquet", param="input")


def audio_items(source: str, *, path_column: str = "path") -> list[AudioItem]:
    """Audio files from a folder (recursively, by suffix), a glob, one file, or a manifest."""
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise BadInputError(f"{source}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder",
                                param="input")
        return [AudioItem(str(f), str(f.resolve())) for f in files]
    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        return _manifest_items(p, path_column)
    if p.is_file():
        return [AudioItem(str(p), str(p.resolve()))]
    if glob.has_magic(source):
        files = sorted(Path(f) for f in glob.glob(source, recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise BadInputError(f"{source}: the pattern matches no file", param="input")
        return [AudioItem(str(f), str(f.resolve())) for f in files]
    raise BadInputError(f"no such file, folder or pattern: {source}", param="input")


def _manifest_items(path: Path, column: str) -> list[AudioItem]:
    rows = read_rows(path)
    if not rows:
        raise BadInputError(f"{path}: the manifest has no rows", param="input")
    out: list[AudioItem] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        value = row.get(column)
        if not isinstance(value, str) or not value:
            raise BadInputError(f"{path}: row {n} has no {column!r} (use --path-column to name the column)",
                                param="path_column")
        where = (Path(value) if Path(value).is_absolute() else path.parent / value).resolve()
        if value in seen:
            continue  # one record per path
        seen.add(value)
        out.append(AudioItem(value, str(where), {k: v for k, v in row.items() if k != column}))
    return out


def speak_items(path: Path) -> list[SpeakItem]:
    rows = read_rows(path)
    if not rows:
        raise BadInputError(f"{path}: the manifest has no rows", param="input")
    out: list[SpeakItem] = []
    ids: set[str] = set()
    width = max(6, len(str(len(rows))))
    for n, row in enumerate(rows, 1):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(f"{path}: row {n} has no 'text'", param="input")
        rid = str(row.get("id") if row.get("id") not in (None, "") else f"{n:0{width}d}")
        if not _ID.match(rid):
            raise BadInputError(f"{path}: row {n}: id {rid[:40]!r} must be 1-128 letters, digits or '_.-' "
                                f"(it names the audio file)", param="input")
        if rid in ids:
            raise BadInputError(f"{path}: row {n}: id {rid!r} appears twice", param="input")
        ids.add(rid)
        ref = _opt(row.get("reference"))
        if ref is not None:
            ref = str((Path(ref) if Path(ref).is_absolute() else path.parent / ref).resolve())
        out.append(SpeakItem(rid, text, _opt(row.get("voice")), ref, _opt(row.get("reference_text")),
                             {k: v for k, v in row.items()
                              if k not in ("id", "text", "voice", "reference", "reference_text")}))
    return out


def _opt(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)
