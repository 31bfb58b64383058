"""Batching across requests: one scheduler thread per loaded batchable model.

An engine whose spec says ``capabilities.batchable`` exposes ``engine.batcher(config) ->
Batcher``: the engine-specific part (static KV slots, prefill, one decoder step for every active
sequence, diffusion steps of a bucket...). The runtime owns the policy (this module): which
requests join, when a step runs, and what happens to callers who leave::

    caller threads            scheduler thread (one per model)
    engine.stream(...)  ──►   pending ──admit──► active sequences ──step──► outputs ──► caller queues
      └ validates, then        (joins at the next step: continuous batching; an empty batch waits
        submit() and read      up to window_ms for companions; finished and cancelled sequences
        its queue              free their slot at once)

Callers keep the engine's normal API: ``engine.stream()`` / ``engine.transcribe()`` validate as
always, then hand the work to the scheduler and yield what it produces, so every front (CLI,
HTTP, Realtime, Wyoming, Ray) gets batching without knowing it exists. The admission gate of a
batched model admits ``max_batch`` requests at once (its capacity follows the batch capacity).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Protocol, TypeVar

from voxbox.errors import RequestCancelledError
from voxbox.types import CancelToken

__all__ = ["BatchConfig", "Batcher", "Scheduler", "SchedulerStats"]

log = logging.getLogger("voxbox.runtime")
R = TypeVar("R")
Out = TypeVar("Out")


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 16  # sequences decoded together (slots)
    window_ms: float = 5.0  # an empty batch waits this long for more requests before its first step


class Batcher(Protocol[R, Out]):
    """The engine's side. Called from the scheduler thread only (no locking needed inside).

    ``admit`` starts new sequences (encode/prefill them as one batch) and returns a handle per
    request; ``step`` advances every active sequence once and returns ``(handle, outputs,
    finished)`` for each sequence that produced output or finished; ``drop`` frees a sequence's
    slot (finished or cancelled).

    Optional: ``expected() -> int``, the number of requests the batcher expects to be pending or
    active at the next step (e.g. the callers in flight whose next request is imminent). Where it
    is defined the scheduler waits up to ``window_ms`` before *every* step (not only an empty
    batch's first) until that many are there; faster-whisper uses it to keep concurrent
    transcriptions in phase, one CTranslate2 call per window of all of them.

    Optional: ``join_every: int``, for a batcher whose admission is costly next to a step (an
    encoder pass per admission): while sequences decode, waiting requests join every that many
    steps, or at once when an eighth of the batch (at least one) is waiting — fewer, larger
    admissions when arrivals trickle in. Unset or 1: they join at the next step.

    Optional: ``waiting``, an attribute the scheduler sets to a callable returning how many
    requests wait to join; for a batcher that may run a lone request on a path of its own inside
    ``admit`` (torch-whisper's single-stream step) and hand it over to the batch when others come.

    Optional: ``warm() -> bool``, one piece of warm-up work (e.g. capturing one CUDA graph that
    traffic is likely to need), called by the scheduler thread only while nothing is pending or
    active; True while more is left. Work done there is not done later, when capturing a graph
    would stall a running batch; a request arriving meanwhile waits for at most one piece."""

    max_batch: int

    def admit(self, requests: list[R]) -> list[Any]: ...

    def step(self) -> list[tuple[Any, list[Out], bool]]: ...

    def drop(self, handle: Any) -> None: ...


@dataclass
class SchedulerStats:
    steps: int = 0  # step() calls
    admitted: int = 0  # requests admitted
    joined_running: int = 0  # requests admitted while other sequences were mid-decode
    max_active: int = 0  # the largest batch stepped
    cancelled: int = 0
    active: int = 0
    pending: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # active sequences per step -> count
    warmed: int = 0  # warm() calls made while idle

    @property
    def rows(self) -> int:
        """Active sequences summed over steps (rows / steps: the mean batch size)."""
        return sum(n * count for n, count in list(self.batch_sizes.items()))


class _Job(Generic[R]):
    __slots__ = ("request", "cancel", "out", "handle", "done")

    def __init__(self, request: R, cancel: CancelToken) -> None:
        self.request = request
        self.cancel = cancel
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.handle: Any = None
        self.done = False


_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Scheduler(Generic[R, Out]):
    def __init__(self, batcher: Batcher[R, Out], config: BatchConfig | None = None, *, name: str = "model") -> None:
        self.batcher = batcher
        self.config = config or BatchConfig(max_batch=batcher.max_batch)
        self.name = name
        self.stats = SchedulerStats()
        self._pending: list[_Job[R]] = []
        if hasattr(batcher, "waiting"):
            batcher.waiting = lambda: len(self._pending)  # type: ignore[attr-defined]
        self._active: dict[int, _Job[R]] = {}  # id(handle) -> job
        self._cond = threading.Condition()
        self._stopped = False
        self._since_join = 0  # steps since requests last joined a running batch
        self._warming = callable(getattr(batcher, "warm", None))  # idle-time warm-up left to do
        self._thread = threading.Thread(target=self._loop, name=f"voxbox-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def warming(self) -> bool:
        """Whether the batcher's idle-time warm-up (``warm``) has more to do."""
        return self._warming

    @property
    def max_batch(self) -> int:
        return min(self.config.max_batch, self.batcher.max_batch)

    # -- caller side ------------------------------------------------------------------------------------
    def submit(self, request: R, cancel: CancelToken | None = None) -> Iterator[Out]:
        """Queue ``request``; iterate its outputs in the caller's thread. Closing the iterator (or
        cancelling the token) frees the sequence's slot at the next step."""
        job: _Job[R] = _Job(request, cancel or CancelToken())
        with self._cond:
            if self._stopped:
                raise RequestCancelledError(f"model {self.name!r} was unloaded")
            self._pending.append(job)
            self._cond.notify_all()
        return self._outputs(job)

    def _outputs(self, job: _Job[R]) -> Iterator[Out]:
        try:
            while True:
                try:
                    item = job.out.get(timeout=0.1)
                except queue.Empty:
                    job.cancel.check()
                    continue
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            if not job.done:
                job.cancel.cancel("the caller stopped reading")
                with self._cond:
                    self._cond.notify_all()

    # -- scheduler thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = not self._stopped and not self._pending and not self._active
                while idle and not self._warming:
                    self._cond.wait()
                    idle = not self._stopped and not self._pending and not self._active
            if idle:  # nothing to serve: one piece of the batcher's warm-up (outside the lock)
                self._warm_once()
                continue
            with self._cond:
                if self._stopped:
                    self._fail_all(RequestCancelledError(f"model {self.name!r} was unloaded"))
                    return
                expected = getattr(self.batcher, "expected", None)
                if self.config.window_ms > 0 and ((self._pending and not self._active) or expected is not None):
                    # an empty batch (or a batcher that says how many callers it expects): give
                    # companions a moment to arrive
                    target = self.max_batch if expected is None else max(1, min(self.max_batch, expected()))
                    deadline = time.monotonic() + self.config.window_ms / 1000
                    while len(self._pending) + len(self._active) < target and not self._stopped:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                joining = self._take_pending() if self._may_join() else []
            self._reap_cancelled()
            if joining:
                self._admit(joining)
                self._since_join = 0
            if self._active:
                self._step()
                self._since_join += 1

    def _warm_once(self) -> None:
        try:
            more = bool(self.batcher.warm())  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - warm-up is an optimisation: serve without the rest
            log.warning("warm-up of %s stopped: %s: %s", self.name, type(exc).__name__, exc)
            more = False
        self.stats.warmed += 1
        self._warming = more

    def _may_join(self) -> bool:
        """Pending requests join now: always into an idle batch; into a running one at the next step,
        or (a batcher with ``join_every``) every that many steps or once enough are waiting."""
        every = int(getattr(self.batcher, "join_every", 1) or 1)
        if every <= 1 or not self._active or self._since_join >= every:
            return True
        return len(self._pending) >= max(1, self.max_batch // 8)

    def _take_pending(self) -> list[_Job[R]]:
        free = self.max_batch - len(self._active)
        live = [j for j in self._pending if not j.cancel.cancelled]
        for j in self._pending:
            if j.cancel.cancelled:
                self._finish(j, RequestCancelledError(f"work stopped: {j.cancel.reason}"))
                self.stats.cancelled += 1
        taking, self._pending = live[:max(0, free)], live[max(0, free):]
        self.stats.pending = len(self._pending)
        return taking

    def _admit(self, jobs: list[_Job[R]]) -> None:
        running = bool(self._active)
        try:
            handles = self.batcher.admit([j.request for j in jobs])
        except BaseException as exc:  # noqa: BLE001 - these requests fail; the others go on
            log.warning("batch admit failed for %d request(s) of %s: %s", len(jobs), self.name, exc)
            for j in jobs:
                self._finish(j, exc)
            return
        for j, h in zip(jobs, handles, strict=False):
            j.handle = h
            self._active[id(h)] = j
        self.stats.admitted += len(jobs)
        if running:
            self.stats.joined_running += len(jobs)

    def _step(self) -> None:
        n = len(self._active)
        self.stats.max_active = max(self.stats.max_active, n)
        self.stats.batch_sizes[n] = self.stats.batch_sizes.get(n, 0) + 1
        try:
            results = self.batcher.step()
        except BaseException as exc:  # noqa: BLE001 - a failed step fails the batch, not the server
            log.error("batch step of %s failed: %s", self.name, exc)
            for j in list(self._active.values()):
                self._drop(j)
                self._finish(j, exc)
            return
        self.stats.steps += 1
        for handle, outputs, finished in results:
            job = self._active.get(id(handle))
            if job is None:
                continue
            for o in outputs:
                job.out.put(o)
            if finished:
                self._drop(job)
                self._finish(job, None)
        self.stats.active = len(self._active)

    def _reap_cancelled(self) -> None:
        for j in [j for j in self._active.values() if j.cancel.cancelled]:
            self._drop(j)
            self._finish(j, RequestCancelledError(f"work stopped: {j.cancel.reason}"))
            self.stats.cancelled += 1

    def _drop(self, j: _Job[R]) -> None:
        self._active.pop(id(j.handle), None)
        try:
            self.batcher.drop(j.handle)
        except Exception:  # noqa: BLE001
            log.exception("dropping a sequence of %s failed", self.name)

    def _finish(self, j: _Job[R], exc: BaseException | None) -> None:
        j.done = True
        j.out.put(_END if exc is None else _Failure(exc))

    def _fail_all(self, exc: BaseException) -> None:
        for j in self._pending + list(self._active.values()):
            self._finish(j, exc)
        self._pending.clear()
        self._active.clear()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        close = getattr(self.batcher, "close", None)  # a batcher's own threads (fish-s2's codec thread)
        if close is not None and not self._thread.is_alive():
            close()
