"""Where voxbox keeps files: one place that honours the XDG variables and voxbox's overrides.

* cache (re-creatable: joined weights, probe verdicts, compiled artefacts):
  ``$VOXBOX_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxbox``, else ``~/.cache/voxbox``;
* models (the operator's weights, served by folder name): ``$VOXBOX_MODELS_DIR``, else
  ``<data dir>/models``;
* data (the operator's: uploaded voices and their encodings):
  ``$VOXBOX_DATA_DIR``, else ``$XDG_DATA_HOME/voxbox``, else ``~/.local/share/voxbox``.

Read at the edge: libraries take the resulting paths as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "models_dir"]


def cache_dir() -> Path:
    d = os.environ.get("VOXBOX_CACHE_DIR")
    if d:
        return Path(d).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voxbox"


def data_dir() -> Path:
    d = os.environ.get("VOXBOX_DATA_DIR")
    if d:
        return Path(d).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "voxbox"


def models_dir() -> Path:
    d = os.environ.get("VOXBOX_MODELS_DIR")
    return Path(d).expanduser() if d else data_dir() / "models"
