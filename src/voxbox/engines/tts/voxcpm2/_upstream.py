"""VoxCPM2's network modules, imported from the installed ``voxcpm`` package without its ``__init__``.

Why: ``voxcpm/__init__.py`` imports ``voxcpm.core``, which imports the VoxCPM 1 model (torchaudio,
which does not load against the torch voxbox runs on), the hub client and, through
``model/voxcpm2.py``, librosa. The network itself lives in ``voxcpm/modules/`` — MiniCPM4
transformer with its static KV cache, the local feature encoder, the local DiT and its flow-matching
wrapper, the scalar quantizer, the 48 kHz AudioVAE — which need only torch, einops and pydantic.

How: a private package object (``voxbox.engines.tts.voxcpm2._voxcpm``) whose ``__path__`` is the
installed ``voxcpm`` directory stands in for the top package, so ``modules/*`` import with their
relative imports intact while ``voxcpm/__init__.py`` never runs and the real ``voxcpm`` package stays
importable as itself (the benchmark runs it side by side). The generation loop (upstream
``VoxCPM2Model._inference``) is voxbox's own (``_runner``), over these modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from voxbox.errors import EngineUnavailableError

__all__ = ["INSTALL_HINT", "modules", "upstream_dir"]

INSTALL_HINT = "pip install --no-deps voxcpm && pip install einops pydantic safetensors transformers"
_ALIAS = __name__.rsplit(".", 1)[0] + "._voxcpm"


def upstream_dir() -> Path:
    """Directory of the installed ``voxcpm`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("voxcpm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError("engine 'voxcpm2' needs the voxcpm package", install_hint=INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations)))


def modules() -> Any:
    """``voxcpm.modules`` (imported under a private name): minicpm4, locdit, locenc, layers, audiovae."""
    if _ALIAS not in sys.modules:
        root = upstream_dir()
        pkg = types.ModuleType(_ALIAS)
        pkg.__path__ = [str(root)]  # type: ignore[attr-defined]
        pkg.__package__ = _ALIAS
        sys.modules[_ALIAS] = pkg
    try:
        for sub in ("minicpm4", "locdit", "locenc", "layers", "audiovae"):
            importlib.import_module(f"{_ALIAS}.modules.{sub}")
        return importlib.import_module(_ALIAS + ".modules")
    except ImportError as exc:
        raise EngineUnavailableError(
            f"voxcpm's modules could not be imported: {exc}", install_hint=INSTALL_HINT
        ) from exc
