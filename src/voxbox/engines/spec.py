"""Engine specs: the one description of an engine that every front, the runtime and the planner read.

An :class:`EngineSpec` says what an engine is without importing its backend:

* ``factory`` — a typed function ``LoadRequest -> engine`` that imports the heavy backend itself;
* ``components`` — the parts the hardware planner places (reference sizes; a loaded engine's
  ``components()`` gives the real ones);
* ``capabilities`` — streaming, cloning, word timestamps, translation, languages, concurrency,
  batching;
* ``options`` — the engine's per-call :class:`Options` dataclass (faster-whisper's
  ``TranscriptionOptions`` habit): fronts build it from their own field names, engines read typed
  attributes and never pop ``**kwargs`` by hand;
* ``load_options`` — the same for load-time settings beyond model/device/dtype/threads.

Each engine module defines its ``SPEC`` at module level and keeps heavy imports inside the factory,
so importing every spec (``voxbox engines``, the server's catalog) stays cheap::

    SPEC = EngineSpec(name="hibari", task="tts", factory=_load, options=HibariOptions, ...)
    engine = SPEC.load(LoadRequest(model=None, device="cpu"))
    opts = SPEC.make_options({"seed": 3})          # BadInputError naming an unknown field
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, Mapping, TypeVar

from voxbox.errors import BadInputError, EngineUnavailableError
from voxbox.types import ComponentSpec

__all__ = [
    "Capabilities",
    "EngineSpec",
    "LoadRequest",
    "NoOptions",
    "Options",
    "Task",
    "build_options",
    "missing_modules",
]

Task = Literal["tts", "asr"]
E = TypeVar("E")
OptT = TypeVar("OptT", bound="Options")


@dataclass(frozen=True)
class Options:
    """Base of every per-call and load-time options dataclass.

    Subclasses are frozen dataclasses whose fields default to ``None`` meaning "the engine's or the
    model's default" unless a concrete default is the documented one. ``check()`` validates values
    and raises :class:`BadInputError` with ``param`` set to the field name.
    """

    def check(self) -> None:
        """Validate field values (override); called by :func:`build_options`."""

    def given(self) -> dict[str, Any]:
        """The fields that are not ``None``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class NoOptions(Options):
    """For engines with no per-call options."""


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no coercion
        return {}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a value against a field's declared type, widening only losslessly (an integral float to
    ``int``, an ``int`` to ``float``, one scalar to a ``tuple[X, ...]``). Fronts parse their own
    wire formats (form strings, JSON) before building options; engines get typed values."""
    if value is None or hint is None:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0]) if len(inner) == 1 else value
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        elem = args[0] if args else None
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(name, v, elem) for v in items)
    elif origin is dict:
        ok = isinstance(value, dict)
    if not ok:
        kind = getattr(hint, "__name__", str(hint))
        raise BadInputError(f"{name} must be {kind_phrase(kind)}, got {value!r:.40}", param=name)
    return value


def kind_phrase(kind: str) -> str:
    return {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string"}.get(
        kind, f"of type {kind}")


def build_options(cls: type[OptT], values: "OptT | Mapping[str, Any] | None" = None, **more: Any) -> OptT:
    """An ``cls`` instance from a mapping (front-end fields) and/or keyword arguments.

    Unknown names raise :class:`BadInputError` naming the first one; values are coerced to the
    declared field types (``"3"`` -> 3 for an ``int`` field), then ``check()`` runs. An instance
    of ``cls`` passes through (``more`` replaces fields of it).
    """
    if isinstance(values, cls):
        if not more:
            values.check()
            return values
        base: dict[str, Any] = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    elif values is None:
        base = {}
    elif isinstance(values, Options):
        raise BadInputError(f"options of type {type(values).__name__} given where {cls.__name__} is expected",
                            param="options")
    else:
        base = dict(values)
    base.update(more)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(k for k in base if k not in names)
    if unknown:
        known = ", ".join(sorted(names)) or "none"
        raise BadInputError(f"unknown option(s) {', '.join(unknown)} (known: {known})", param=unknown[0])
    hints = _field_types(cls)
    coerced = {k: _coerce(k, v, hints.get(k)) for k, v in base.items()}
    opts = cls(**coerced)
    opts.check()
    return opts


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; fronts use it to answer 400 before loading anything."""

    streaming: bool = False  # yields audio (TTS) or segments (ASR) while it works
    cloning: bool = False  # encode_voice() from a reference clip
    voice_design: bool = False  # a voice from a text description
    word_timestamps: bool = False
    translate: bool = False  # Whisper's translate-to-English task (multilingual models)
    languages: tuple[str, ...] = ()  # () = depends on the model; see the loaded engine's info
    max_concurrency: int = 1  # calls that may run at once on one loaded instance
    batchable: bool = False  # the runtime may batch requests across callers (engine.batcher())


@dataclass(frozen=True)
class LoadRequest:
    """Everything a factory needs to load an engine.

    ``model`` is an engine-specific model id or local path (``None`` = the bundled default): the
    catalog resolves client-facing names to it, and only the CLI passes paths directly.
    ``options`` are engine-specific load-time settings, validated by the engine's
    ``load_options`` dataclass.
    """

    model: str | None = None
    device: str = "auto"
    dtype: str | None = None
    threads: int | None = None
    placement: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineSpec(Generic[E, OptT]):
    name: str
    task: Task
    factory: Callable[[LoadRequest], E] = field(repr=False)
    options: type[OptT]
    description: str
    requires: tuple[str, ...] = ()  # importable top-level modules the backend needs
    install_hint: str = ""
    components: tuple[ComponentSpec, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: Model loaded when none is named; ``None`` = the engine needs a local model (path).
    default_model: str | None = None
    #: Client-facing names that select this engine's default model (OpenAI ids, the engine name).
    aliases: tuple[str, ...] = ()
    #: Model ids usable here without a path (bundled/installed); cheap, no backend import.
    bundled_models: Callable[[], list[str]] | None = field(default=None, repr=False)
    #: Voices usable without loading (TTS); cheap.
    bundled_voices: Callable[[], list[str]] | None = field(default=None, repr=False)
    load_options: type[Options] | None = None
    #: Well-known folder names under the models directory (``$VOXBOX_MODELS_DIR``, default
    #: ``<data dir>/models``): a folder ``<models dir>/<name>`` becomes the catalog model ``name``
    #: of this engine (e.g. ``kokoro``), so weights the operator drops there are servable by name.
    local_names: tuple[str, ...] = ()

    # -- availability ------------------------------------------------------------------------------
    def missing(self) -> list[str]:
        return missing_modules(*self.requires)

    def available(self) -> tuple[bool, str]:
        """(usable, reason) without importing the backend."""
        missing = self.missing()
        if missing:
            return False, f"missing {', '.join(missing)}; install with: {self.install_hint}"
        if self.default_model is None:
            return True, "installed; needs a local model directory (--model PATH)"
        return True, "installed"

    # -- use ---------------------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> E:
        missing = self.missing()
        if missing:
            raise EngineUnavailableError(f"engine {self.name!r} needs {', '.join(missing)}",
                                         install_hint=self.install_hint)
        if "torch" in self.requires:  # torch.compile's kernels survive the process (compile_cache)
            from voxbox.engines.compile_cache import persist_bytecode_cache, persist_compile_cache

            persist_bytecode_cache()
            persist_compile_cache()
        return self.factory(request)

    def make_options(self, values: Any = None, **more: Any) -> OptT:
        return build_options(self.options, values, **more)


def missing_modules(*names: str) -> list[str]:
    """The names among ``names`` that cannot be imported (checked without importing them)."""
    missing = []
    for mod in names:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(mod)
    return missing
