"""The upstream Echo-TTS model classes, imported without the ``echo_tts`` package's ``__init__``.

Why: ``echo_tts/__init__.py`` imports ``echo_tts.inference``, which imports ``torchaudio`` (for
``load_audio``/``save``) and ``huggingface_hub`` at module level. torchaudio's newest release
(2.11) fails to load against the CPU torch 2.13 voxbox runs on, and voxbox decodes and resamples
audio with PyAV anyway. The model classes themselves live in two self-contained modules,
``echo_tts/model.py`` (``EchoDiT``; needs torch only) and ``echo_tts/autoencoder.py`` (``DAC``,
``build_ae``; needs torch and einops), neither of which imports anything from the package.

How: ``importlib.util.find_spec("echo_tts")`` locates the installed package *without executing
it*; we then execute just those two source files with ``spec_from_file_location`` under private
module names (``voxbox.engines.tts.echo._upstream_model`` ...). No ``sys.modules`` shim, no
stubbed torchaudio: the upstream ``echo_tts`` package stays importable as itself (the GPU benchmark
imports it for the side-by-side run), and voxbox never executes the parts that need torchaudio.

Everything voxbox needs from ``inference.py`` (byte tokenizer, PCA state, presets) is small and
reimplemented in this package, with the upstream function it mirrors named next to it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from voxbox.errors import EngineUnavailableError

__all__ = ["upstream_dir", "upstream_model", "upstream_autoencoder", "upstream_presets", "INSTALL_HINT",
           "UpstreamModule"]

# Upstream's model objects (``EchoDiT``, the DAC autoencoder and their submodules) come from untyped
# source executed at run time; voxbox walks them by attribute name (``blocks``, ``conv``, ``padding``),
# which ``nn.Module.__getattr__`` would type as ``Tensor | Module``.
UpstreamModule = Any

INSTALL_HINT = "pip install --no-deps echo-tts && pip install einops safetensors"

_CACHE: dict[str, ModuleType] = {}


def upstream_dir() -> Path:
    """Directory of the installed ``echo_tts`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("echo_tts")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError("engine 'echo-tts' needs the echo-tts package", install_hint=INSTALL_HINT)
    return Path(list(spec.submodule_search_locations)[0])


def _load_file(stem: str) -> ModuleType:
    if stem in _CACHE:
        return _CACHE[stem]
    path = upstream_dir() / f"{stem}.py"
    name = f"{__name__.rsplit('.', 1)[0]}._upstream_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EngineUnavailableError(f"echo-tts is installed but {path} is missing", install_hint=INSTALL_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # einops missing, typically
        sys.modules.pop(name, None)
        raise EngineUnavailableError(
            f"echo-tts {stem}.py could not be imported: {exc}", install_hint=INSTALL_HINT
        ) from exc
    _CACHE[stem] = module
    return module


def upstream_model() -> ModuleType:
    """``echo_tts/model.py``: ``EchoDiT`` and its blocks."""
    return _load_file("model")


def upstream_autoencoder() -> ModuleType:
    """``echo_tts/autoencoder.py``: ``DAC``, ``build_ae`` and the Fish S1-DAC layers."""
    return _load_file("autoencoder")


def upstream_presets() -> dict[str, dict[str, Any]]:
    """Upstream ``resources/sampler_presets.json`` with its string values parsed to numbers.

    (Upstream stores every value as a string, so ``EchoTTS.synthesize(preset=...)`` passes
    ``num_steps="40"`` to ``range()``; voxbox converts them.)
    """
    path = upstream_dir() / "resources" / "sampler_presets.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            number = float(value)
            parsed["steps" if key == "num_steps" else key] = int(number) if key == "num_steps" else number
        out[name] = parsed
    return out
