"""OmniVoice's pure-Python helpers, imported from the installed ``omnivoice`` package without its ``__init__``.

Why: ``omnivoice/__init__.py`` imports ``omnivoice.models.omnivoice``, which imports ``torchaudio``
(it fails to load against the torch voxbox runs on), ``soundfile``, ``pydub`` and transformers'
Higgs audio tokenizer (which itself needs torchaudio). The parts of upstream that decide *what* is
generated and need nothing but the standard library live in four self-contained files:

* ``utils/duration.py`` — ``RuleDurationEstimator`` (how many audio frames a text gets);
* ``utils/text.py`` — ``chunk_text_punctuation`` (long-text chunks), ``add_punctuation``;
* ``utils/voice_design.py`` — the voice-design vocabulary (gender, age, pitch, accent, dialect);
* ``utils/lang_map.py`` — language names and ids.

``importlib.util.find_spec("omnivoice")`` locates the package without executing it; each file is
then executed under a private module name (as the echo-tts engine does with echo_tts's model
files). The model itself (Qwen3 backbone, audio heads, iterative unmasking) and the audio codec
are voxbox's own code against the upstream checkpoint layout (see ``_backbone``, ``_codec``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from voxbox.errors import EngineUnavailableError

__all__ = ["INSTALL_HINT", "duration", "lang_map", "text", "upstream_dir", "voice_design"]

INSTALL_HINT = "pip install --no-deps omnivoice && pip install transformers safetensors"

_CACHE: dict[str, ModuleType] = {}


def upstream_dir() -> Path:
    """Directory of the installed ``omnivoice`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("omnivoice")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError("engine 'omnivoice' needs the omnivoice package", install_hint=INSTALL_HINT)
    return Path(list(spec.submodule_search_locations)[0])


def _load(stem: str) -> ModuleType:
    if stem in _CACHE:
        return _CACHE[stem]
    path = upstream_dir() / "utils" / f"{stem}.py"
    name = f"{__name__.rsplit('.', 1)[0]}._upstream_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise EngineUnavailableError(f"omnivoice is installed but {path} is missing", install_hint=INSTALL_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        sys.modules.pop(name, None)
        raise EngineUnavailableError(f"omnivoice utils/{stem}.py could not be imported: {exc}",
                                     install_hint=INSTALL_HINT) from exc
    _CACHE[stem] = module
    return module


def duration() -> ModuleType:
    """``omnivoice/utils/duration.py``: ``RuleDurationEstimator``."""
    return _load("duration")


def text() -> ModuleType:
    """``omnivoice/utils/text.py``: ``chunk_text_punctuation``, ``add_punctuation``."""
    return _load("text")


def voice_design() -> ModuleType:
    """``omnivoice/utils/voice_design.py``: the voice-design vocabulary tables."""
    return _load("voice_design")


def lang_map() -> ModuleType:
    """``omnivoice/utils/lang_map.py``: ``LANG_IDS``, ``LANG_NAME_TO_ID``."""
    return _load("lang_map")
