"""The model catalog: the names a client may ask for, each bound to an engine and its weights.

Over the network a model is only a **name from this catalog** — never a path. The catalog holds:

* the bundled models that are installed here: the OpenAI ids (``tts-1`` → hibari, ``tts-1-hd`` →
  piper, ``whisper-1`` → faster-whisper tiny.en), each engine's name for its default model, and
  ``engine:model`` for every other bundled model id (``faster-whisper:base``);
* the operator's local models: ``models.local`` in the settings
  (``VOXBOX_MODELS__LOCAL='{"my-whisper": "torch-whisper:/srv/models/ft"}'``) and
  ``voxbox serve --model NAME=ENGINE:PATH``.

The CLI may still pass paths (``voxbox transcribe --model PATH``): it adds an entry for them
itself. An unknown name is :class:`ModelNotFoundError` (404) naming only the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from voxbox.engines.registry import ENGINES, get_spec
from voxbox.errors import BadInputError, ModelNotFoundError

__all__ = ["Catalog", "CatalogEntry", "parse_local"]

Task = Literal["tts", "asr"]
Source = Literal["bundled", "local"]

#: A catalog name: what a client sends as ``model``. No slashes, no whitespace, bounded.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}\Z")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    engine: str
    task: Task
    model: str | None = None  # the engine's model id or local path; None = its default
    source: Source = "bundled"
    load_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str | None]:
        """What one loaded instance is shared by: names that alias the same weights share it."""
        return (self.engine, self.model)

    def public(self) -> dict[str, Any]:
        """What a client may see about the entry (never the path)."""
        return {"id": self.name, "engine": self.engine, "task": self.task, "source": self.source}


def parse_local(name: str, value: str | Mapping[str, Any]) -> CatalogEntry:
    """``"ENGINE:PATH"`` or ``{"engine": ..., "path": ..., "options": {...}}`` -> an entry named ``name``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInputError(f"model name {name!r} must be 1-128 letters, digits or '_.:+-' (no paths)",
                            param="models.local")
    if isinstance(value, str):
        engine, sep, path = value.partition(":")
        options: Mapping[str, Any] = {}
        if not sep:
            engine, path = value, ""
    elif isinstance(value, Mapping):
        engine, path = str(value.get("engine", "")), str(value.get("path", "") or "")
        options = dict(value.get("options") or {})
    else:
        raise BadInputError(f"models.local[{name!r}] must be 'ENGINE:PATH' or a mapping", param="models.local")
    if engine not in ENGINES:
        known = ", ".join(sorted(ENGINES))
        raise BadInputError(f"models.local[{name!r}]: unknown engine {engine!r} (known: {known})", param="models.local")
    spec = ENGINES[engine]
    return CatalogEntry(name=name, engine=engine, task=spec.task, model=path or None, source="local",
                        load_options=options)


class Catalog:
    """Name -> :class:`CatalogEntry`. Built once at the edge (server start, CLI call)."""

    def __init__(self, entries: Iterable[CatalogEntry] = ()) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        for e in entries:
            self.add(e)

    @classmethod
    def default(cls, local: Mapping[str, Any] | None = None, *, bundled: bool = True,
                models_dir: Path | None = None) -> "Catalog":
        """The bundled models installed here, the well-known folders under ``models_dir`` (see
        ``EngineSpec.local_names``), then ``local`` (name -> ``ENGINE:PATH``), later ones winning."""
        cat = cls()
        if bundled:
            for e in bundled_entries():
                cat.add(e)
        if models_dir is not None:
            for e in folder_entries(models_dir):
                cat.add(e)
        for name, value in (local or {}).items():
            cat.add(parse_local(name, value))
        return cat

    def add(self, entry: CatalogEntry) -> None:
        get_spec(entry.engine)  # an unknown engine is a configuration error, early
        self._entries[entry.name] = entry

    def entries(self, task: Task | None = None) -> list[CatalogEntry]:
        return [e for e in self._entries.values() if task is None or e.task == task]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name) if isinstance(name, str) else None

    def resolve(self, name: Any, task: Task | None = None) -> CatalogEntry:
        """The entry for a client-supplied name; 404 with the name only (never a path or listing)."""
        if not isinstance(name, str) or not name:
            raise ModelNotFoundError("model must be a model name from GET /v1/models", param="model")
        entry = self._entries.get(name)
        shown = name if _NAME.match(name) else "(invalid name)"
        if entry is None:
            raise ModelNotFoundError(f"model {shown!r} does not exist; see GET /v1/models", param="model")
        if task is not None and entry.task != task:
            what = "speech" if task == "tts" else "transcription"
            raise ModelNotFoundError(f"model {shown!r} is not a {what} model; see GET /v1/models", param="model")
        return entry


def folder_entries(models_dir: Path) -> list[CatalogEntry]:
    """An entry for each ``<models_dir>/<name>`` folder that an engine declares in ``local_names``."""
    out: list[CatalogEntry] = []
    for spec in ENGINES.values():
        for name in spec.local_names:
            folder = models_dir / name
            if folder.is_dir():
                out.append(CatalogEntry(name=name, engine=spec.name, task=spec.task, model=str(folder), source="local"))
    return out


def bundled_entries() -> list[CatalogEntry]:
    """Entries for the bundled models whose packages are installed (cheap: no hashing, no import
    of a backend)."""
    out: list[CatalogEntry] = []
    for spec in ENGINES.values():
        if spec.default_model is None or not spec.available()[0]:
            continue
        models = list(spec.bundled_models()) if spec.bundled_models is not None else [spec.default_model]
        if spec.default_model not in models:
            continue  # the default's weights are missing: the engine is not usable
        for alias in spec.aliases:
            out.append(CatalogEntry(name=alias, engine=spec.name, task=spec.task))
        for m in models:
            if m == spec.name or m in spec.aliases:
                continue
            model = None if m == spec.default_model else m
            out.append(CatalogEntry(name=f"{spec.name}:{m}", engine=spec.name, task=spec.task, model=model))
    return out
