"""``voxbox_manifest.json``: where a converted model came from and how it was made.

::

    {"format": "voxbox-convert/1", "source": "/ckpt", "source_sha256": "…", "source_files": 6,
     "target": "ct2", "quantization": "int8", "created": "2026-11-22T02:30:00+00:00",
     "tools": {"voxbox": "0.1.0", "ctranslate2": "4.8.5", "transformers": "…", "torch": "…"},
     "files": {"model.bin": 12345, …}, "verification": {…} | null}

``source_sha256`` is one SHA-256 over the checkpoint's config, generation config, tokenizer and
weight files, each fed as ``relative/path\\0<size>\\0<bytes>`` in sorted path order, so the same
checkpoint always hashes the same wherever it lives.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "checkpoint_sha256", "dir_size", "read_manifest", "tool_versions", "write_manifest"]

MANIFEST_NAME = "voxbox_manifest.json"
_TOOLS = ("voxbox", "ctranslate2", "faster-whisper", "transformers", "torch", "onnx", "onnxruntime", "tokenizers",
          "safetensors", "numpy")


def checkpoint_sha256(root: Path, files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def tool_versions(names: Iterable[str] = _TOOLS) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_manifest(out: Path, *, source: Path, source_sha256: str, source_files: int, target: str,
                   quantization: str, extra: dict[str, Any] | None = None,
                   verification: dict[str, Any] | None = None) -> Path:
    files = {f.relative_to(out).as_posix(): f.stat().st_size for f in sorted(out.rglob("*"))
             if f.is_file() and f.name != MANIFEST_NAME}
    data: dict[str, Any] = {
        "format": "voxbox-convert/1",
        "source": str(source.resolve()),
        "source_sha256": source_sha256,
        "source_files": source_files,
        "target": target,
        "quantization": quantization,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tools": tool_versions(),
        "files": files,
        "size_bytes": sum(files.values()),
        "verification": verification,
    }
    if extra:
        data.update(extra)
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / MANIFEST_NAME).read_text(encoding="utf-8"))


def update_manifest(out: Path, **fields: Any) -> None:
    data = read_manifest(out)
    data.update(fields)
    (Path(out) / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
