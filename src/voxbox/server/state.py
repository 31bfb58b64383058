"""What one running server holds: its settings, the runtime, the metrics and its lifecycle flags.

All model loading, admission, worker threads and cancellation live in :mod:`voxbox.runtime`; the
server adds only HTTP concerns on top.
"""

from __future__ import annotations

import time

from voxbox.runtime import Runtime
from voxbox.server.metrics import Metrics
from voxbox.server.settings import ServerSettings

__all__ = ["ServerState"]


class ServerState:
    def __init__(self, settings: ServerSettings, runtime: Runtime, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.metrics = metrics
        self.ready = False
        self.startup_error: str | None = None
        self.created = int(time.time())
        self.inflight = 0  # API requests being handled (streams until their last byte)

    @property
    def draining(self) -> bool:
        return self.runtime.draining

    @property
    def voices(self):  # type: ignore[no-untyped-def]
        assert self.runtime.voices is not None
        return self.runtime.voices
