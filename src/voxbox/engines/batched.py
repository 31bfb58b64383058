"""What engines share when the runtime batches their calls across requests.

The runtime's scheduler (:mod:`voxbox.runtime.batching`) drives an engine's ``Batcher`` from one
thread per model; a caller's ``stream()`` submits its parsed call and reads back :class:`Piece`
objects: an item for the caller (an ``AudioChunk``, a ``Segment``...) plus the stage seconds and
details the batch spent on that request since its last piece. :func:`relay` turns them back into
the engine's usual stream, so a batched call fills ``timings`` and ``details`` like an unbatched
one::

    def _generate_batched(self, call, timings, details, cancel):
        yield from relay(self._scheduler.submit(request, cancel), timings, details)

Stage times of a batched request are the wall times of the batch steps it took part in (a step
shared by 16 requests counts fully for each of them): they stay disjoint within one request, so
they still add up to at most its wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Protocol, TypeVar

from voxbox.types import StageTimings

__all__ = ["Piece", "Submitter", "bucket", "host_to_device", "next_pow2", "pow2_buckets", "pow2_floor", "relay"]

T = TypeVar("T")


@dataclass
class Piece(Generic[T]):
    """One output of a batched request: ``item`` (None for a final piece that only reports),
    the stage seconds spent on the request since its previous piece, and details to merge."""

    item: T | None = None
    stages: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Submitter(Protocol):
    """The part of :class:`voxbox.runtime.batching.Scheduler` an engine uses."""

    max_batch: int

    def submit(self, request: Any, cancel: Any = None) -> Iterator[Any]: ...

    def close(self) -> None: ...


def relay(pieces: Iterator[Piece[T]], timings: StageTimings, details: dict[str, Any], *,
          started: float | None = None, first_key: str | None = "first_audio_s") -> Iterator[T]:
    """Yield the items of ``pieces``, adding their stage seconds to ``timings`` and their details
    to ``details``; ``details[first_key]`` = seconds from ``started`` to the first item. Closing
    this generator closes ``pieces`` (the scheduler then frees the request's slot)."""
    t0 = time.perf_counter() if started is None else started
    first = True
    try:
        for piece in pieces:
            for stage, seconds in piece.stages.items():
                timings.add(stage, seconds)
            details.update(piece.details)
            if piece.item is not None:
                if first and first_key:
                    details[first_key] = time.perf_counter() - t0
                first = False
                yield piece.item
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def bucket(n: int, sizes: list[int]) -> int:
    """The smallest of ``sizes`` (ascending) that is >= n; the largest if none is."""
    for s in sizes:
        if s >= n:
            return s
    return sizes[-1]


def next_pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 << (max(1, n) - 1).bit_length()


def pow2_floor(n: int) -> int:
    """The largest power of two <= ``n`` (1 for n <= 1): the next piece when ``n`` rows are split
    into power-of-two pieces, largest first."""
    return 1 << (max(1, n).bit_length() - 1)


def pow2_buckets(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``, then ``limit`` itself: the batch sizes graphs are captured for."""
    out, b = [], 1
    while b < limit:
        out.append(b)
        b *= 2
    out.append(max(1, limit))
    return out


def host_to_device(t: Any, device: Any) -> Any:
    """Host tensor ``t`` on ``device`` without waiting for the GPU: on CUDA through pinned memory
    and an asynchronous copy (a blocking host-to-device copy waits for every kernel queued before
    it, stalling a batch scheduler between its steps); elsewhere a plain copy."""
    if getattr(device, "type", None) != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
