"""Where voxbox keeps files: one place that reads the environment for directories.

* :func:`cache_dir` -- re-creatable files (concatenated model weights, probe verdicts, bench clips,
  converted peer weights): ``$VOXBOX_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxbox``, else
  ``~/.cache/voxbox``.
* :func:`data_dir` -- files users made and would miss (uploaded voices): ``$XDG_DATA_HOME/voxbox``,
  else ``~/.local/share/voxbox`` (the server's ``VOXBOX_DATA_DIR`` setting overrides it at the edge).
* :func:`models_dir` -- the operator's weights, served by folder name: ``$VOXBOX_MODELS_DIR``, else
  ``<data dir>/models``.

Neither function creates the directory; callers ``mkdir`` what they write into. Read at the edge:
libraries take the resulting paths as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "models_dir"]


def _xdg(var: str, fallback: tuple[str, ...]) -> Path:
    base = os.environ.get(var)
    if base and os.path.isabs(os.path.expanduser(base)):  # the XDG spec: relative values are ignored
        return Path(base).expanduser()
    return Path.home().joinpath(*fallback)


def cache_dir() -> Path:
    """``$VOXBOX_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxbox``, else ``~/.cache/voxbox``."""
    override = os.environ.get("VOXBOX_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return _xdg("XDG_CACHE_HOME", (".cache",)) / "voxbox"


def data_dir() -> Path:
    """``$XDG_DATA_HOME/voxbox``, else ``~/.local/share/voxbox``."""
    return _xdg("XDG_DATA_HOME", (".local", "share")) / "voxbox"


def models_dir() -> Path:
    """``$VOXBOX_MODELS_DIR``, else ``<data dir>/models``."""
    override = os.environ.get("VOXBOX_MODELS_DIR")
    return Path(override).expanduser() if override else data_dir() / "models"
