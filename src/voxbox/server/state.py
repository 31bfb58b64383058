"""What one running server holds: settings, model manager, admission gates, voice store, metrics,
and the worker pool that runs engine work off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, TypeVar

from voxbox.errors import CapacityError, VoxboxTimeoutError
from voxbox.runtime.admission import Admission, Slot
from voxbox.runtime.models import Key, Lease, LoadedModel, ModelManager
from voxbox.runtime.voices import VoiceStore
from voxbox.server.metrics import Metrics
from voxbox.server.middleware import ServerTiming
from voxbox.server.settings import ServerSettings

__all__ = ["ServerState", "Work"]

log = logging.getLogger("voxbox.server")
T = TypeVar("T")


@dataclass
class Work:
    """A request's hold on a model: its lease and its admission slot. ``release()`` is idempotent."""

    lease: Lease
    slot: Slot
    label: str
    deadline: float  # time.monotonic() after which the request has timed out
    _state: "ServerState" = field(repr=False)
    _released: bool = False

    @property
    def engine(self) -> Any:
        return self.lease.engine

    @property
    def model(self) -> LoadedModel:
        return self.lease.model

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.slot.release()
        self.lease.release()


def model_label(key: Key) -> str:
    engine, model = key
    return engine if model is None else f"{engine}:{model}"


class ServerState:
    def __init__(self, settings: ServerSettings, *, resolve: Callable[..., Key], loader: Callable[..., Any]) -> None:
        self.settings = settings
        self.metrics = Metrics()
        # Engine work (synthesis steps, transcription, decode/encode) runs here, never on the loop.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="voxbox-work")
        self.manager = ModelManager(
            resolve=resolve,
            loader=loader,
            ttl=settings.models.ttl,
            executor=self.executor,
            on_load=self._on_load,
            on_unload=self._on_unload,
        )
        self.voices = VoiceStore(settings.data_dir, cache_size=settings.voices.cache_size)
        self.admissions: dict[Key, Admission] = {}
        self.ready = False
        self.draining = False
        self.startup_error: str | None = None
        self.created = int(time.time())
        self._background: set[asyncio.Task[Any]] = set()

    # -- hooks ---------------------------------------------------------------------------------
    def _on_load(self, model: LoadedModel) -> None:
        label = model_label(model.key)
        self.metrics.loaded.labels(label).set(1)
        self.metrics.load_time.labels(label).observe(model.load_seconds)

    def _on_unload(self, model: LoadedModel) -> None:
        self.metrics.loaded.labels(model_label(model.key)).set(0)

    def _update_gauges(self, key: Key) -> None:
        gate = self.admissions.get(key)
        if gate is not None:
            label = model_label(key)
            self.metrics.queue_depth.labels(label).set(gate.waiting)
            self.metrics.running.labels(label).set(gate.running)

    # -- work ----------------------------------------------------------------------------------
    def spawn(self, coro: Any) -> "asyncio.Task[Any]":
        """Run ``coro`` in the background, keeping a reference until it ends (the loop keeps only
        weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in the worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def admission(self, model: LoadedModel) -> Admission:
        gate = self.admissions.get(model.key)
        if gate is None:
            n = self.settings.admission.max_concurrency
            if n is None:
                n = int(getattr(getattr(model.engine, "info", None), "max_concurrency", 1) or 1)
            key = model.key
            gate = self.admissions[key] = Admission(
                model_label(key), n, self.settings.admission.queue_size, on_change=lambda: self._update_gauges(key)
            )
        return gate

    async def acquire(self, model_id: str | None, task: Literal["tts", "asr"], timing: ServerTiming) -> Work:
        """Load (or reuse) the model, then wait for an admission slot. Records ``load`` and ``queue``."""
        deadline = time.monotonic() + self.settings.admission.request_timeout
        lease = await self.manager.acquire(model_id, task)
        timing.set("load", lease.load_seconds)
        label = model_label(lease.model.key)
        gate = self.admission(lease.model)
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VoxboxTimeoutError("request timed out while loading the model")
            slot = await gate.acquire(timeout=remaining)
        except CapacityError:
            self.metrics.rejected.labels(label).inc()
            lease.release()
            raise
        except BaseException:
            lease.release()
            raise
        timing.set("queue", slot.queued_seconds)
        return Work(lease=lease, slot=slot, label=label, deadline=deadline, _state=self)

    def drop_admission(self, key: Key) -> None:
        gate = self.admissions.get(key)
        if gate is not None and gate.running == 0 and gate.waiting == 0:
            del self.admissions[key]

    async def close(self) -> None:
        await self.manager.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
