"""Admission control: at most N requests run at once per model, a bounded FIFO wait queue, and
``CapacityError`` (HTTP 429 with Retry-After) beyond it.

::

    gate = Admission("hibari", max_concurrency=1, queue_size=4)
    slot = await gate.acquire(timeout=30)     # CapacityError / VoxboxTimeoutError
    try:
        ...
    finally:
        slot.release()                         # idempotent; may be called from any task

A slot is a plain object rather than only a context manager because a streamed response keeps its
slot after the route returns and releases it when the stream ends or the client disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import math
import statistics
import time
from typing import Callable

from voxbox.errors import CapacityError, VoxboxTimeoutError

__all__ = ["Admission", "Slot"]


class Slot:
    __slots__ = ("_gate", "_released", "acquired_at", "queued_seconds")

    def __init__(self, gate: "Admission", queued_seconds: float) -> None:
        self._gate = gate
        self._released = False
        self.acquired_at = time.perf_counter()
        self.queued_seconds = queued_seconds

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._gate._release(time.perf_counter() - self.acquired_at)


class Admission:
    """Per-model gate. Must be used from one event loop."""

    def __init__(
        self, name: str, max_concurrency: int, queue_size: int, on_change: Callable[[], None] | None = None
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.name = name
        self.max_concurrency = int(max_concurrency)
        self.queue_size = max(0, int(queue_size))
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._service: collections.deque[float] = collections.deque(maxlen=32)  # recent slot hold times
        self._on_change = on_change  # called whenever running/waiting change (metrics gauges)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def record_service(self, seconds: float) -> None:
        """One request held its slot for ``seconds`` (feeds :meth:`retry_after`)."""
        self._service.append(float(seconds))

    def service_time(self) -> float | None:
        """Median seconds a request held its slot, over the last 32 (None before any finished)."""
        if not self._service:
            return None
        return float(statistics.median(self._service))

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free, from observed service times.

        The running requests are on average half done; the queue ahead drains ``max_concurrency``
        at a time; a new request needs one waiter to leave the queue: ``median x (0.5 + waiting /
        concurrency)`` rounded up, at least 1 s (HTTP's resolution).
        """
        per = self.service_time()
        if per is None:
            per = 1.0
        est = per * (0.5 + self.waiting / self.max_concurrency)
        return float(max(1, math.ceil(est)))

    async def acquire(self, timeout: float | None = None) -> Slot:
        t0 = time.perf_counter()
        if self.running < self.max_concurrency and not self.waiting:
            self.running += 1
            self._changed()
            return Slot(self, 0.0)
        if self.waiting >= self.queue_size:
            raise CapacityError(
                f"model {self.name!r} is busy: {self.running} running, {self.waiting} waiting "
                f"(queue size {self.queue_size}); retry later",
                retry_after=self.retry_after(),
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._changed()
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the last moment: hand it on
                self._release(None)
            else:
                fut.cancel()
            self._discard(fut)
            raise VoxboxTimeoutError(
                f"request waited {timeout:.0f} s for model {self.name!r} without a free slot"
            ) from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release(None)
            else:
                fut.cancel()
            self._discard(fut)
            raise
        self._changed()
        return Slot(self, time.perf_counter() - t0)

    def _discard(self, fut: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
        self._changed()

    def _release(self, held_seconds: float | None) -> None:
        if held_seconds is not None:
            self.record_service(held_seconds)
        # Hand the slot straight to the first live waiter (FIFO), else free it.
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._changed()
                return
        self.running -= 1
        self._changed()
