"""Model manager: load on first use (or preload), reference-count while in use, unload when idle.

::

    manager = ModelManager(loader=load_engine, ttl=300)
    lease = await manager.acquire("tts-1", "tts")   # loads once even if many requests race
    try:
        lease.engine.stream(...)
    finally:
        lease.release()                               # idempotent; streams release at their end

A model id is whatever the API accepts (``tts-1``, ``piper``, ``faster-whisper:base``...); it is
resolved to an (engine, model) key so aliases share one loaded instance. Loading runs in a worker
thread so the event loop stays responsive. ``ttl < 0`` never unloads; ``ttl == 0`` unloads as soon
as the last user releases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from voxbox.errors import ModelLoadError, VoxboxError

__all__ = ["Lease", "LoadedModel", "ModelManager"]

log = logging.getLogger("voxbox.runtime")

Task = Literal["tts", "asr"]
Key = tuple[str, str | None]  # (engine name, model for that engine's load(); None = its default)


@dataclass
class LoadedModel:
    key: Key
    task: Task
    engine: Any
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    refs: int = 0
    last_used: float = field(default_factory=time.monotonic)
    unload_requested: bool = False

    @property
    def name(self) -> str:
        engine, model = self.key
        return engine if model is None else f"{engine}:{model}"


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
        resolve: Callable[[str | None, Task], Key],
        loader: Callable[[str, str | None], Any],
        ttl: float = 300.0,
        executor: Executor | None = None,
        on_load: Callable[[LoadedModel], None] | None = None,
        on_unload: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        self._resolve = resolve
        self._loader = loader
        self.ttl = ttl
        self._executor = executor
        self._on_load = on_load
        self._on_unload = on_unload
        self._models: dict[Key, LoadedModel] = {}
        self._loading: dict[Key, asyncio.Future[LoadedModel]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.load_count: dict[Key, int] = {}

    # -- queries -------------------------------------------------------------------------------
    def resolve(self, model_id: str | None, task: Task) -> Key:
        return self._resolve(model_id, task)

    def loaded(self) -> list[LoadedModel]:
        return list(self._models.values())

    def get_loaded(self, key: Key) -> LoadedModel | None:
        return self._models.get(key)

    # -- lifecycle -------------------------------------------------------------------------------
    async def acquire(self, model_id: str | None, task: Task) -> Lease:
        key = self.resolve(model_id, task)
        t0 = time.perf_counter()
        model = await self._ensure_loaded(key, task)
        waited = time.perf_counter() - t0
        model.refs += 1
        model.last_used = time.monotonic()
        return Lease(self, model, waited if waited > 0.001 else 0.0)

    async def load(self, model_id: str | None, task: Task) -> LoadedModel:
        key = self.resolve(model_id, task)
        return await self._ensure_loaded(key, task)

    async def _ensure_loaded(self, key: Key, task: Task) -> LoadedModel:
        model = self._models.get(key)
        if model is not None and not model.unload_requested:
            return model
        fut = self._loading.get(key)
        if fut is None:
            # The load is its own task: a caller that goes away (client disconnect) does not
            # cancel a load that other callers are waiting for.
            fut = asyncio.get_running_loop().create_task(self._load(key, task))
            self._loading[key] = fut

            def _done(f: asyncio.Future[LoadedModel], key: Key = key) -> None:
                if self._loading.get(key) is f:
                    del self._loading[key]
                if not f.cancelled():
                    f.exception()  # retrieved: every waiter re-raises it

            fut.add_done_callback(_done)
        return await asyncio.shield(fut)

    async def _load(self, key: Key, task: Task) -> LoadedModel:
        engine_name, model_name = key
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        log.info("loading model %s", engine_name if model_name is None else f"{engine_name}:{model_name}")
        try:
            engine = await loop.run_in_executor(self._executor, self._loader, engine_name, model_name)
        except VoxboxError:
            raise
        except Exception as exc:  # backend failure: convert at the boundary
            raise ModelLoadError(f"could not load {engine_name}: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - t0
        model = LoadedModel(key=key, task=task, engine=engine, load_seconds=seconds)
        self._models[key] = model
        self.load_count[key] = self.load_count.get(key, 0) + 1
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
        log.info("unloading model %s", model.name)
        try:
            close = getattr(model.engine, "close", None)
            if close is not None:
                close()
        except Exception:  # an engine that fails to close must not take the server down
            log.exception("closing %s failed", model.name)
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
