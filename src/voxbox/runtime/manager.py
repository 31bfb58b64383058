"""Model manager: load on first use (or preload), reference-count while in use, unload when idle,
and never hold more than ``max_loaded`` models or ``memory_budget`` bytes of them.

::

    manager = ModelManager(loader=load_entry, ttl=300, max_loaded=4)
    lease = await manager.acquire(entry)        # loads once even if many requests race
    try:
        lease.engine.stream(...)
    finally:
        lease.release()                          # idempotent; streams release at their end

Instances are keyed by the catalog entry's ``key`` (engine, model), so names that alias the same
weights share one instance. Loading runs in a worker thread so the event loop stays responsive.
``ttl < 0`` never unloads idle models; ``ttl == 0`` unloads as soon as the last user releases.
When a load would pass ``max_loaded`` or the memory budget, the least recently used *idle* model
is unloaded first; if every loaded model is in use the load fails with
:class:`ServiceUnavailableError` (HTTP 503) rather than growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from voxbox.errors import ModelLoadError, ServiceUnavailableError, VoxboxError
from voxbox.runtime.catalog import CatalogEntry
from voxbox.types import ComponentSpec

__all__ = ["Key", "Lease", "LoadedModel", "ModelManager", "estimate_bytes"]

log = logging.getLogger("voxbox.runtime")

Task = Literal["tts", "asr"]
Key = tuple[str, str | None]  # (engine name, model for its factory; None = its default)


def estimate_bytes(components: list[ComponentSpec] | tuple[ComponentSpec, ...]) -> int:
    """Memory a model needs: each component's params at its first (preferred) dtype plus overhead."""
    from voxbox.hardware.memory import bytes_for

    return sum(bytes_for(c, c.dtypes[0] if c.dtypes else "float32") for c in components)


@dataclass
class LoadedModel:
    key: Key
    entry: CatalogEntry  # the entry it was first loaded for (its label in metrics and logs)
    task: Task
    engine: Any
    load_seconds: float
    nbytes: int = 0
    loaded_at: float = field(default_factory=time.time)
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    unload_requested: bool = False

    @property
    def name(self) -> str:
        return self.entry.name


class Lease:
    """One user's hold on a loaded model."""

    __slots__ = ("_manager", "_released", "model", "load_seconds")

    def __init__(self, manager: "ModelManager", model: LoadedModel, load_seconds: float) -> None:
        self._manager = manager
        self._released = False
        self.model = model
        self.load_seconds = load_seconds  # time this request spent waiting for a load (0 if warm)

    @property
    def engine(self) -> Any:
        return self.model.engine

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self.model)


class ModelManager:
    def __init__(
        self,
        *,
        loader: Callable[[CatalogEntry], Any],
        ttl: float = 300.0,
        max_loaded: int | None = None,
        memory_budget: int | None = None,
        executor: Executor | None = None,
        estimate: Callable[[CatalogEntry], int] | None = None,
        on_load: Callable[[LoadedModel], None] | None = None,
        on_unload: Callable[[LoadedModel], None] | None = None,
        hide_load_errors: bool = False,
    ) -> None:
        self.hide_load_errors = hide_load_errors  # servers: clients get a generic message
        self._loader = loader
        self.ttl = ttl
        self.max_loaded = max_loaded
        self.memory_budget = memory_budget
        self._executor = executor
        self._estimate = estimate or (lambda entry: 0)
        self._on_load = on_load
        self._on_unload = on_unload
        self._models: dict[Key, LoadedModel] = {}
        self._loading: dict[Key, asyncio.Future[LoadedModel]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.load_count: dict[Key, int] = {}

    # -- queries -------------------------------------------------------------------------------
    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def get_loaded(self, key: Key) -> LoadedModel | None:
        return self._models.get(key)

    def loaded_bytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    # -- lifecycle -------------------------------------------------------------------------------
    async def acquire(self, entry: CatalogEntry) -> Lease:
        t0 = time.perf_counter()
        model = await self._ensure_loaded(entry)
        waited = time.perf_counter() - t0
        model.refs += 1
        model.last_used = time.monotonic()
        return Lease(self, model, waited if waited > 0.001 else 0.0)

    async def load(self, entry: CatalogEntry) -> LoadedModel:
        return await self._ensure_loaded(entry)

    async def _ensure_loaded(self, entry: CatalogEntry) -> LoadedModel:
        key = entry.key
        model = self._models.get(key)
        if model is not None and not model.unload_requested:
            return model
        fut = self._loading.get(key)
        if fut is None:
            self._make_room(entry)
            # The load is its own task: a caller that goes away (client disconnect) does not
            # cancel a load that other callers are waiting for.
            fut = asyncio.get_running_loop().create_task(self._load(entry))
            self._loading[key] = fut

            def _done(f: asyncio.Future[LoadedModel], key: Key = key) -> None:
                if self._loading.get(key) is f:
                    del self._loading[key]
                if not f.cancelled():
                    f.exception()  # retrieved: every waiter re-raises it

            fut.add_done_callback(_done)
        return await asyncio.shield(fut)

    def _make_room(self, entry: CatalogEntry) -> None:
        """Unload idle models (least recently used first) until ``entry`` fits the cap and budget."""
        need = self._estimate(entry)

        def over() -> bool:
            count = len(self._models) + len(self._loading) + 1
            if self.max_loaded is not None and count > self.max_loaded:
                return True
            return self.memory_budget is not None and self.loaded_bytes() + need > self.memory_budget

        if self.memory_budget is not None and need > self.memory_budget:
            raise ServiceUnavailableError(
                f"model {entry.name!r} needs about {need / 2**30:.1f} GiB, more than the memory budget "
                f"({self.memory_budget / 2**30:.1f} GiB)")
        while over():
            idle = sorted((m for m in self._models.values() if m.refs == 0), key=lambda m: m.last_used)
            if not idle:
                raise ServiceUnavailableError(
                    f"cannot load model {entry.name!r} now: {len(self._models)} model(s) are loaded and busy "
                    f"(limit: {self.max_loaded} models"
                    + (f", {self.memory_budget / 2**30:.1f} GiB" if self.memory_budget is not None else "")
                    + "); retry later")
            log.info("unloading idle model %s to make room for %s", idle[0].name, entry.name)
            self._unload_now(idle[0])

    async def _load(self, entry: CatalogEntry) -> LoadedModel:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        log.info("loading model %s (engine %s)", entry.name, entry.engine)
        try:
            engine = await loop.run_in_executor(self._executor, self._loader, entry)
        except VoxboxError as exc:
            if not self.hide_load_errors:
                raise
            # the operator's paths and the backend's words stay in the log, not in a client's error body
            log.error("loading model %s failed: %s: %s", entry.name, type(exc).__name__, exc)
            raise ModelLoadError(f"could not load model {entry.name!r} (see the server log)") from exc
        except Exception as exc:  # backend failure: convert at the boundary; details stay in the log
            log.error("loading model %s failed: %s: %s", entry.name, type(exc).__name__, exc)
            raise ModelLoadError(f"could not load model {entry.name!r} (see the server log)") from exc
        seconds = time.perf_counter() - t0
        try:
            nbytes = estimate_bytes(engine.components())
        except Exception:  # noqa: BLE001 - an engine that cannot size itself keeps the estimate
            nbytes = self._estimate(entry)
        model = LoadedModel(key=entry.key, entry=entry, task=entry.task, engine=engine, load_seconds=seconds,
                            nbytes=nbytes)
        self._models[entry.key] = model
        self.load_count[entry.key] = self.load_count.get(entry.key, 0) + 1
        log.info("loaded model %s in %.2f s", model.name, seconds)
        if self._on_load:
            self._on_load(model)
        return model

    def _release(self, model: LoadedModel) -> None:
        model.refs = max(0, model.refs - 1)
        model.last_used = time.monotonic()
        if model.refs == 0 and (model.unload_requested or self.ttl == 0):
            self._unload_now(model)

    def unload(self, key: Key) -> bool:
        """Unload now if idle, else as soon as the last user releases. False if not loaded."""
        model = self._models.get(key)
        if model is None:
            return False
        model.unload_requested = True
        if model.refs == 0:
            self._unload_now(model)
        return True

    def _unload_now(self, model: LoadedModel) -> None:
        if self._models.get(model.key) is model:
            del self._models[model.key]
        t0 = time.perf_counter()
        try:
            close = getattr(model.engine, "close", None)
            if close is not None:
                close()
        except Exception:  # an engine that fails to close must not take the server down
            log.exception("closing %s failed", model.name)
        log.info("unloaded model %s in %.2f s", model.name, time.perf_counter() - t0)
        if self._on_unload:
            self._on_unload(model)

    def reap_idle(self) -> list[LoadedModel]:
        """Unload models idle for longer than the TTL; returns those unloaded."""
        if self.ttl < 0:
            return []
        now = time.monotonic()
        idle = [m for m in self._models.values() if m.refs == 0 and now - m.last_used >= self.ttl]
        for m in idle:
            self._unload_now(m)
        return idle

    def start(self) -> None:
        if self.ttl > 0 and self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def _reap_loop(self) -> None:
        interval = min(max(self.ttl / 4, 0.05), 10.0)
        while True:
            await asyncio.sleep(interval)
            self.reap_idle()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
            self._reaper = None
        for m in list(self._models.values()):
            self._unload_now(m)
