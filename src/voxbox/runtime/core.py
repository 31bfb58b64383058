"""The front-agnostic runtime: catalog → model manager → admission → work in worker threads.

Every front (CLI, HTTP, Realtime websocket, Wyoming, Ray replicas, bench) holds one
:class:`Runtime` and does the same three things::

    async with runtime.acquire("whisper-1", "asr", timeout=300) as work:   # load, queue, deadline
        segments, info = await runtime.call(work, work.engine.transcribe, audio, cancel=work.cancel)
        async for seg in runtime.iterate(work, lambda: segments): ...      # lazy results, off the loop

``acquire`` resolves the name in the catalog (404 for unknown names), loads the model (shared,
ref-counted, TTL, capped), waits for an admission slot (bounded queue; 429 with a Retry-After
estimated from observed service times; a caller cancelled while queued leaves the queue at once)
and gives a :class:`Work` with a deadline and a :class:`~voxbox.types.CancelToken`. When the
caller leaves early (disconnect, deadline), the token is set; engines stop at their next check
and the slot is freed once the worker thread has really stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Literal, Protocol, TypeVar

from voxbox.engines.base import EncodedVoice
from voxbox.engines.registry import ENGINES, get_spec
from voxbox.engines.spec import EngineSpec, LoadRequest
from voxbox.errors import (
    CapacityError,
    RequestCancelledError,
    ServiceUnavailableError,
    UnsupportedOperationError,
    VoxboxTimeoutError,
)
from voxbox.runtime.admission import Admission, Slot
from voxbox.runtime.batching import BatchConfig, Scheduler
from voxbox.runtime.catalog import Catalog, CatalogEntry
from voxbox.runtime.manager import Key, Lease, LoadedModel, ModelManager, estimate_bytes
from voxbox.runtime.streams import ThreadedIterator
from voxbox.runtime.voices import VoiceStore
from voxbox.types import CancelToken

__all__ = ["Observer", "Runtime", "RuntimeConfig", "Work"]

log = logging.getLogger("voxbox.runtime")
T = TypeVar("T")
Task = Literal["tts", "asr"]


def _default_workers() -> int:
    """Worker threads: each running engine call holds one, and uploads decode there too. Enough for
    every model's slots plus decoding on a big machine, bounded so a flood cannot spawn hundreds."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(64, 8 + 4 * cpus)


@dataclass(frozen=True)
class RuntimeConfig:
    """Load, admission and scheduling settings (the server maps its settings onto this)."""

    device: str = "auto"  # passed to every engine's factory
    threads: int | None = None  # CPU threads per engine (None = the engine's default)
    ttl: float = 300.0  # idle seconds before a model is unloaded; -1 never
    max_loaded: int | None = 4  # models loaded at once; the least recently used idle one makes room
    memory_budget: int | None = None  # bytes of models loaded at once (estimated from components)
    max_concurrency: int | None = None  # per model; None = the engine's own
    queue_size: int = 16  # waiting requests per model before 429
    request_timeout: float = 300.0  # seconds per request, queue wait included; then 504
    lookahead: int = 2  # items a streaming worker may run ahead of its consumer
    workers: int | None = None  # worker threads; None = min(64, 8 + 4 x CPUs)
    hide_load_errors: bool = False  # True for servers: load failures reach clients without paths
    batching: bool | None = None  # batch batchable models across requests; None = on where they run on CUDA
    batch_max: int | None = None  # sequences per batch (slots); None = 16, fewer if memory holds fewer
    batch_window_ms: float = 5.0  # an idle model waits this long for companions before its first step


class Observer(Protocol):
    """Hooks for metrics (the server's Prometheus registry implements them)."""

    def model_loaded(self, model: LoadedModel) -> None: ...

    def model_unloaded(self, model: LoadedModel) -> None: ...

    def queue_changed(self, label: str, waiting: int, running: int) -> None: ...

    def rejected(self, label: str) -> None: ...


class Work:
    """A caller's hold on a model: its lease, its admission slot, a deadline and a cancel token.

    Jobs started through :meth:`Runtime.iterate` / :meth:`Runtime.call` are counted; ``close()``
    cancels any still running and the slot and lease are released when the last one has stopped.
    """

    def __init__(self, entry: CatalogEntry, lease: Lease, slot: Slot, deadline: float, cancel: CancelToken,
                 on_release: Callable[["Work"], None] | None = None) -> None:
        self.entry = entry
        self._on_release = on_release
        self.lease = lease
        self.slot = slot
        self.deadline = deadline
        self.cancel = cancel
        self.load_seconds = lease.load_seconds
        self.queue_seconds = slot.queued_seconds
        self._jobs = 0
        self._closed = False
        self._released = False

    @property
    def engine(self) -> Any:
        return self.lease.engine

    @property
    def model(self) -> LoadedModel:
        return self.lease.model

    @property
    def spec(self) -> EngineSpec[Any, Any]:
        return get_spec(self.entry.engine)

    @property
    def label(self) -> str:
        """The name metrics and logs use: the catalog name the model was loaded under."""
        return self.lease.model.name

    @property
    def released(self) -> bool:
        return self._released

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _job_started(self) -> None:
        self._jobs += 1

    def _job_done(self) -> None:
        self._jobs -= 1
        if self._closed and self._jobs <= 0:
            self._release()

    def close(self, reason: str = "the caller finished") -> None:
        """Idempotent. Running jobs are cancelled; the slot is freed once they have stopped."""
        if self._closed:
            return
        self._closed = True
        if self._jobs > 0:
            self.cancel.cancel(reason)
        else:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.slot.release()
        self.lease.release()
        if self._on_release is not None:
            self._on_release(self)


class Runtime:
    def __init__(self, catalog: Catalog, config: RuntimeConfig | None = None, *,
                 loader: Callable[[CatalogEntry], Any] | None = None, voices: VoiceStore | None = None,
                 observer: Observer | None = None) -> None:
        self.catalog = catalog
        self.config = config or RuntimeConfig()
        self.voices = voices
        self.observer = observer
        self.executor = ThreadPoolExecutor(max_workers=self.config.workers or _default_workers(),
                                           thread_name_prefix="voxbox-work")
        self._loader = loader or self._load_entry
        self.schedulers: dict[Key, Scheduler[Any, Any]] = {}  # batched models' schedulers
        self.manager = ModelManager(
            loader=self._load_and_batch, ttl=self.config.ttl, max_loaded=self.config.max_loaded,
            memory_budget=self.config.memory_budget, executor=self.executor,
            estimate=lambda e: estimate_bytes(get_spec(e.engine).components),
            on_load=self._on_load, on_unload=self._on_unload, hide_load_errors=self.config.hide_load_errors,
        )
        self.admissions: dict[Key, Admission] = {}
        self.draining = False
        self._works: set[Work] = set()  # admitted and not yet released
        self._background: set[asyncio.Task[Any]] = set()

    # -- loading -------------------------------------------------------------------------------------
    def _load_entry(self, entry: CatalogEntry) -> Any:
        spec = get_spec(entry.engine)
        return spec.load(LoadRequest(model=entry.model, device=self.config.device, threads=self.config.threads,
                                     options=entry.load_options))

    def _load_and_batch(self, entry: CatalogEntry) -> Any:
        """Load (worker thread), then attach a batch scheduler where the engine can batch."""
        engine = self._loader(entry)
        self._attach_scheduler(entry, engine)
        return engine

    def _attach_scheduler(self, entry: CatalogEntry, engine: Any) -> None:
        """If the spec says ``batchable`` and batching is on (default: on CUDA), the engine's calls
        go through one :class:`Scheduler` (``engine.use_scheduler``); the model's admission then
        admits as many requests as the batch has slots. A batcher that fails to build leaves the
        engine unbatched (logged), never unloaded."""
        spec = ENGINES.get(entry.engine)
        if spec is None or not spec.capabilities.batchable or not hasattr(engine, "batcher"):
            return
        on = self.config.batching
        if on is None:
            on = str(getattr(getattr(engine, "info", None), "device", "")).startswith("cuda")
        if not on:
            return
        cfg = BatchConfig(max_batch=self.config.batch_max or BatchConfig().max_batch,
                          window_ms=self.config.batch_window_ms)
        try:
            scheduler: Scheduler[Any, Any] = Scheduler(engine.batcher(cfg), cfg, name=entry.name)
        except Exception as exc:  # noqa: BLE001 - the model still serves, one call at a time
            log.warning("batching %s is off: its batcher failed to start: %s: %s", entry.name, type(exc).__name__, exc)
            return
        engine.use_scheduler(scheduler)
        self.schedulers[entry.key] = scheduler
        log.info("batching %s across requests: up to %d at once, window %.1f ms", entry.name,
                 scheduler.max_batch, cfg.window_ms)

    def _on_load(self, model: LoadedModel) -> None:
        if self.observer:
            self.observer.model_loaded(model)

    def _on_unload(self, model: LoadedModel) -> None:
        scheduler = self.schedulers.pop(model.key, None)
        if scheduler is not None:
            scheduler.close()
        gate = self.admissions.get(model.key)
        if gate is not None and gate.running == 0 and gate.waiting == 0:
            del self.admissions[model.key]
        if self.observer:
            self.observer.model_unloaded(model)

    async def load(self, name: str, task: Task | None = None) -> LoadedModel:
        return await self.manager.load(self.catalog.resolve(name, task))

    def unload(self, name: str) -> bool:
        return self.manager.unload(self.catalog.resolve(name).key)

    def loaded(self, name: str) -> LoadedModel | None:
        entry = self.catalog.get(name)
        return self.manager.get_loaded(entry.key) if entry is not None else None

    # -- admission -------------------------------------------------------------------------------------
    def admission(self, model: LoadedModel) -> Admission:
        gate = self.admissions.get(model.key)
        if gate is None:
            n = self.config.max_concurrency
            scheduler = self.schedulers.get(model.key)
            if n is None and scheduler is not None:
                n = scheduler.max_batch  # admission capacity follows the batch capacity
            if n is None:
                n = int(getattr(getattr(model.engine, "info", None), "max_concurrency", 1) or 1)
            label = model.name
            gate = self.admissions[model.key] = Admission(label, n, self.config.queue_size,
                                                          on_change=lambda: self._queue_changed(label, model.key))
        return gate

    def _queue_changed(self, label: str, key: Key) -> None:
        gate = self.admissions.get(key)
        if gate is not None and self.observer:
            self.observer.queue_changed(label, gate.waiting, gate.running)

    async def open(self, name: str | CatalogEntry, task: Task | None = None, *,
                   timeout: float | None = None) -> Work:
        """Resolve, load, admit. The caller must ``close()`` the Work (see :meth:`acquire`)."""
        entry = name if isinstance(name, CatalogEntry) else self.catalog.resolve(name, task)
        if self.draining:
            raise ServiceUnavailableError("the server is shutting down; retry on another instance")
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.request_timeout)
        lease = await self.manager.acquire(entry)
        gate = self.admission(lease.model)
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VoxboxTimeoutError("request timed out while loading the model")
            slot = await gate.acquire(timeout=remaining)
        except CapacityError:
            if self.observer:
                self.observer.rejected(lease.model.name)
            lease.release()
            raise
        except BaseException:
            lease.release()
            raise
        work = Work(entry, lease, slot, deadline, CancelToken(), on_release=self._works.discard)
        self._works.add(work)
        return work

    @asynccontextmanager
    async def acquire(self, name: str | CatalogEntry, task: Task | None = None, *,
                      timeout: float | None = None) -> AsyncIterator[Work]:
        work = await self.open(name, task, timeout=timeout)
        try:
            yield work
        finally:
            work.close()

    # -- running work ------------------------------------------------------------------------------------
    def iterate(
        self, work: Work, make: Callable[[], Iterator[T]], *, lookahead: int | None = None
    ) -> ThreadedIterator[T]:
        """Run ``make()`` and its iteration in a worker thread; consume it asynchronously."""
        work._job_started()
        it: ThreadedIterator[T] = ThreadedIterator(make, executor=self.executor, cancel=work.cancel,
                                                   lookahead=lookahead or self.config.lookahead,
                                                   on_finished=work._job_done)
        return it.start()

    async def call(self, work: Work, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn`` for ``work`` in a worker thread, bounded by the work's deadline.

        If the caller is cancelled (disconnect) or the deadline passes, the work's cancel token is
        set and this returns at once; the slot is freed when ``fn`` has really returned.
        """
        loop = asyncio.get_running_loop()
        work._job_started()
        fut = loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
        fut.add_done_callback(lambda _f: work._job_done())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.001, work.remaining()))
        except asyncio.TimeoutError:
            work.cancel.cancel("the request timed out")
            fut.add_done_callback(_consume)
            raise VoxboxTimeoutError("the work did not finish within the request timeout") from None
        except asyncio.CancelledError:
            work.cancel.cancel("the caller went away")
            fut.add_done_callback(_consume)
            raise
        except RequestCancelledError:
            if time.monotonic() >= work.deadline:
                raise VoxboxTimeoutError("the work did not finish within the request timeout") from None
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking ``fn(*args)`` in the worker pool, for work that holds no model (decoding uploads)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def spawn(self, coro: Any) -> "asyncio.Task[Any]":
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- voices ---------------------------------------------------------------------------------------
    async def voice_for(self, work: Work, name: str,
                        decode: Callable[[bytes], Any]) -> tuple[str | EncodedVoice, str | None]:
        """(what the engine gets for ``name``, cache outcome): built-in and OpenAI names pass as-is;
        an uploaded voice becomes the engine's cached encoding ("memory" | "disk" | "miss")."""
        info = work.engine.info
        openai_map = (info.extra or {}).get("openai_voices") or {}
        lname = name.strip().lower()
        if lname in info.voices or lname in openai_map or name in info.voices:
            return name, None
        stored = self.voices.get(name) if self.voices is not None else None
        if stored is None:
            return name, None  # the engine knows its own voices and raises VoiceNotFoundError otherwise
        if not info.supports_cloning:
            builtin = ", ".join(info.voices) or "none"
            raise UnsupportedOperationError(
                f"voice {name!r} is an uploaded reference voice, but model {work.entry.name!r} cannot clone voices; "
                f"use one of its built-in voices ({builtin}) or a cloning model", param="voice")
        engine = work.engine
        store = self.voices
        assert store is not None

        def encode(clip: bytes, transcript: str | None) -> EncodedVoice:
            return engine.encode_voice(decode(clip), transcript)

        enc, where = await self.call(work, store.encoding, stored, info.name, str(info.model), encode)
        return enc, where

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.manager.start()

    @property
    def busy(self) -> int:
        """Works admitted and not yet released (running requests, streams until their end)."""
        return len(self._works)

    async def drain(self, grace: float) -> bool:
        """Stop taking work (readiness fails) and wait up to ``grace`` seconds for admitted work to
        end; then cancel what is left (engines stop at their next check). True if all ended in time."""
        self.draining = True
        deadline = time.monotonic() + max(0.0, grace)
        while self._works and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self._works:
            return True
        log.warning("drain: cancelling %d request(s) still running after %.0f s", len(self._works), grace)
        for work in list(self._works):
            work.cancel.cancel("the server is shutting down")
        end = time.monotonic() + 2.0
        while self._works and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        self.draining = True
        await self.manager.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _consume(fut: "asyncio.Future[Any]") -> None:
    """Retrieve a late result or exception nobody waits for any more (no 'never retrieved' noise)."""
    if not fut.cancelled():
        fut.exception()
