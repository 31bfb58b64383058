"""Engine registry: every built-in :class:`~voxbox.engines.spec.EngineSpec` by name.

Importing this module imports each engine's light top module (its spec and Options dataclass),
never a backend: availability is checked with ``importlib.util.find_spec`` so ``voxbox engines``
stays fast and works with none of the heavy extras installed. A new engine adds its ``SPEC`` to
``_BUILTIN`` below (and nothing else here).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from voxbox.engines.asr import faster_whisper, onnx_whisper, parakeet, torch_whisper, whisper_cpp
from voxbox.engines.base import ASREngine, Engine, TTSEngine
from voxbox.engines.spec import EngineSpec, LoadRequest, missing_modules
from voxbox.engines.tts import echo, fish_s2, hibari, kokoro, omnivoice, piper, voxcpm2
from voxbox.errors import ModelNotFoundError

__all__ = ["ENGINES", "available", "get_spec", "load_engine", "load_asr", "load_tts", "missing_modules",
           "register", "resolve_model"]

Task = Literal["tts", "asr"]

_BUILTIN: tuple[EngineSpec[Any, Any], ...] = (
    hibari.SPEC,
    piper.SPEC,
    faster_whisper.SPEC,
    torch_whisper.SPEC,
    onnx_whisper.SPEC,
    whisper_cpp.SPEC,
    echo.SPEC,
    fish_s2.SPEC,
    kokoro.SPEC,
    parakeet.SPEC,
    omnivoice.SPEC,
    voxcpm2.SPEC,
)

ENGINES: dict[str, EngineSpec[Any, Any]] = {}


def register(spec: EngineSpec[Any, Any]) -> EngineSpec[Any, Any]:
    ENGINES[spec.name] = spec
    return spec


for _spec in _BUILTIN:
    register(_spec)

#: Default engine per task when a caller names none.
DEFAULT_ENGINE: dict[str, str] = {"tts": "hibari", "asr": "faster-whisper"}


def get_spec(name: str) -> EngineSpec[Any, Any]:
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ModelNotFoundError(f"unknown engine {name!r}; known engines: {known}", param="engine") from None


def available(spec: EngineSpec[Any, Any]) -> tuple[bool, str]:
    """(usable, reason) for an engine on this machine, without importing its backend."""
    return spec.available()


def resolve_model(model: str | None, task: Task, engine: str | None = None) -> tuple[str, str | None]:
    """(engine name, model for that engine's factory) from what a *local* caller (the CLI, Python
    code, the operator's settings) names. Servers resolve client names through the catalog instead.

    ``model`` may be an alias (``tts-1``, ``whisper-1``, an engine name), ``engine:model``
    (``piper:/voices/x.onnx``, ``faster-whisper:base``) or, with ``engine``, the engine's own model
    id or path.
    """
    if engine is not None:
        spec = get_spec(engine)
        if spec.task != task:
            raise ModelNotFoundError(f"engine {engine!r} is a{'n' if spec.task == 'asr' else ''} {spec.task} "
                                     f"engine, not {task}", param="engine")
        if model in (None, "", engine) or model in spec.aliases:
            return engine, None
        return engine, model
    if not model:
        return DEFAULT_ENGINE[task], None
    for spec in ENGINES.values():
        if spec.task == task and model in spec.aliases:
            return spec.name, None
    if ":" in model:
        name, _, sub = model.partition(":")
        if name in ENGINES and ENGINES[name].task == task:
            return name, sub or None
    raise ModelNotFoundError(f"unknown {task} model {model!r}", param="model")


def load_engine(name: str, model: str | None = None, *, device: str = "auto", dtype: str | None = None,
                threads: int | None = None, placement: Any = None, **options: Any) -> Engine:
    """Load engine ``name`` with ``model`` (None = its default); ``options`` are its load options."""
    spec = get_spec(name)
    return cast(Engine, spec.load(LoadRequest(model=model, device=device, dtype=dtype, threads=threads,
                                              placement=placement, options=options)))


def load_tts(name: str, model: str | None = None, **kwargs: Any) -> TTSEngine:
    if get_spec(name).task != "tts":
        raise ModelNotFoundError(f"engine {name!r} is not a TTS engine", param="engine")
    return cast(TTSEngine, load_engine(name, model, **kwargs))


def load_asr(name: str, model: str | None = None, **kwargs: Any) -> ASREngine:
    if get_spec(name).task != "asr":
        raise ModelNotFoundError(f"engine {name!r} is not an ASR engine", param="engine")
    return cast(ASREngine, load_engine(name, model, **kwargs))
