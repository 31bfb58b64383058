"""A blocking facade over :class:`~voxbox.runtime.core.Runtime` for the CLI and scripts.

The runtime lives on an event loop in a background thread (an anyio blocking portal); the caller's
thread drives it with plain calls and iterators, so the CLI uses the same catalog, model manager,
admission and worker threads as the server::

    with SyncRuntime(catalog) as rt, rt.acquire("tts-1", "tts") as work:
        stream = work.engine.stream("Hello.")           # validation happens here, in the caller
        for chunk in rt.iterate(work, lambda: stream):  # steps run in the runtime's workers
            ...
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from voxbox.runtime.catalog import Catalog, CatalogEntry
from voxbox.runtime.core import Runtime, RuntimeConfig, Work

__all__ = ["SyncRuntime"]

T = TypeVar("T")
Task = Literal["tts", "asr"]


class SyncRuntime:
    def __init__(self, catalog: Catalog, config: RuntimeConfig | None = None, **kwargs: Any) -> None:
        self._args = (catalog, config, kwargs)
        self._portal_cm: Any = None
        self._portal: BlockingPortal | None = None
        self.runtime: Runtime | None = None

    def __enter__(self) -> "SyncRuntime":
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        catalog, config, kwargs = self._args

        async def make() -> Runtime:
            return Runtime(catalog, config, **kwargs)

        self.runtime = self._portal.call(make)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.runtime is not None and self._portal is not None:
                self._portal.call(self.runtime.close)
        finally:
            if self._portal_cm is not None:
                self._portal_cm.__exit__(*exc)
            self._portal = None

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None, "use SyncRuntime as a context manager"
        return self._portal

    @contextmanager
    def acquire(self, name: str | CatalogEntry, task: Task | None = None, *,
                timeout: float | None = None) -> Iterator[Work]:
        assert self.runtime is not None
        rt = self.runtime
        work: Work = self.portal.call(lambda: rt.open(name, task, timeout=timeout))
        try:
            yield work
        finally:
            self.portal.call(_close, work)

    def iterate(self, work: Work, make: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Items of ``make()`` produced in the runtime's worker threads, in the caller's thread."""
        assert self.runtime is not None
        rt = self.runtime
        it = self.portal.call(_start_iter, rt, work, make)
        try:
            while True:
                try:
                    yield self.portal.call(it.next)
                except StopAsyncIteration:
                    return
        finally:
            self.portal.call(it.aclose)

    def call(self, work: Work, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self.runtime is not None
        rt = self.runtime
        return self.portal.call(lambda: rt.call(work, fn, *args, **kwargs))


async def _close(work: Work) -> None:
    work.close()


async def _start_iter(rt: Runtime, work: Work, make: Callable[[], Any]) -> Any:
    return rt.iterate(work, make)
