"""The runtime below every front: catalog, model manager, admission, stream runner, voices.

See :mod:`voxbox.runtime.core` for how a front uses it and ``ARCHITECTURE.md`` for where it sits.
"""

from voxbox.runtime.catalog import Catalog, CatalogEntry
from voxbox.runtime.core import Observer, Runtime, RuntimeConfig, Work

__all__ = ["Catalog", "CatalogEntry", "Observer", "Runtime", "RuntimeConfig", "Work"]
