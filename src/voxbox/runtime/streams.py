"""Running blocking engine work off the event loop: one threaded iterator, one blocking call.

:class:`ThreadedIterator` runs a blocking iterator (an engine's speech stream with its encoder,
an ASR engine's lazy segments) in a worker thread and hands its items to the event loop through
an anyio memory stream of ``lookahead`` items: the producer never runs more than ``lookahead``
items ahead of the consumer (backpressure), and a consumer that stops (``aclose()``: end,
disconnect, deadline, shutdown) sets the cancel token and closes the stream, so the producer
stops after the item in progress — the engine also checks the token inside long items. When the
producer has really stopped and closed the engine's iterator, ``on_finished`` runs on the loop:
that is when the admission slot is freed, so a slot is never handed on while the engine is
still busy.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any, Callable, Generic, Iterator, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from voxbox.errors import RequestCancelledError, VoxboxTimeoutError
from voxbox.types import CancelToken

__all__ = ["ThreadedIterator"]

log = logging.getLogger("voxbox.runtime")
T = TypeVar("T")

_END = object()


class ThreadedIterator(Generic[T]):
    def __init__(self, make: Callable[[], Iterator[T]], *, executor: Executor, cancel: CancelToken,
                 lookahead: int = 2, on_finished: Callable[[], None] | None = None) -> None:
        self._make = make
        self._executor = executor
        self.cancel = cancel
        self._on_finished = on_finished
        send, recv = anyio.create_memory_object_stream[Any](max_buffer_size=max(1, lookahead))
        self._send: MemoryObjectSendStream[Any] = send
        self._recv: MemoryObjectReceiveStream[Any] = recv
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None
        self.finished = asyncio.Event()
        self.exhausted = False  # the iterator ran to its end
        self.items = 0

    # -- producer (worker thread) -------------------------------------------------------------------
    def _put(self, value: Any) -> None:
        assert self._loop is not None
        coro = self._send.send(value)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed (shutdown, Ctrl-C): nobody will receive this
            coro.close()
            raise RequestCancelledError("the event loop is gone") from None
        while True:
            try:
                fut.result(timeout=0.25)
                return
            except TimeoutError:
                if self.cancel.cancelled:
                    fut.cancel()
                    raise RequestCancelledError(f"stopped: {self.cancel.reason}") from None

    def _produce(self) -> None:
        it: Iterator[T] | None = None
        try:
            it = self._make()
            while True:
                self.cancel.check()
                try:
                    item = next(it)
                except StopIteration:
                    self.exhausted = True
                    self._put(_END)
                    return
                self._put(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, RequestCancelledError):
            pass  # the consumer left
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            try:
                self._put(_Failure(exc))
            except BaseException:  # noqa: BLE001 - nobody is listening any more
                if not isinstance(exc, Exception):
                    raise
                log.debug("worker error after the consumer left: %s", exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None and not self.exhausted:
                try:
                    close()  # stops the engine's generator (its finally blocks run here)
                except Exception:  # noqa: BLE001
                    log.exception("closing an engine iterator failed")

    # -- consumer (event loop) ------------------------------------------------------------------------
    def start(self) -> "ThreadedIterator[T]":
        self._loop = asyncio.get_running_loop()
        self._future = asyncio.ensure_future(self._loop.run_in_executor(self._executor, self._produce))
        self._future.add_done_callback(self._done)
        return self

    def _done(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("worker thread failed", exc_info=fut.exception())
        self.finished.set()
        self._send.close()
        if self._on_finished is not None:
            try:
                self._on_finished()
            except Exception:  # noqa: BLE001
                log.exception("on_finished failed")

    async def next(self, timeout: float | None = None) -> T:
        """The next item; StopAsyncIteration at the end; the producer's exception re-raised;
        VoxboxTimeoutError (and the work cancelled) when ``timeout`` seconds pass first."""
        try:
            if timeout is None:
                value = await self._recv.receive()
            else:
                with anyio.fail_after(max(0.0, timeout)):
                    value = await self._recv.receive()
        except TimeoutError:
            await self.aclose("timeout")
            raise VoxboxTimeoutError("the work did not finish within the request timeout") from None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        if value is _END:
            raise StopAsyncIteration
        if isinstance(value, _Failure):
            raise value.exc
        self.items += 1
        return value  # type: ignore[no-any-return]

    def __aiter__(self) -> "ThreadedIterator[T]":
        return self

    async def __anext__(self) -> T:
        return await self.next()

    async def aclose(self, reason: str = "consumer closed the stream") -> None:
        """Stop: the producer ends after the item in progress. Does not wait for it."""
        if not self.exhausted:
            self.cancel.cancel(reason)
        self._recv.close()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
