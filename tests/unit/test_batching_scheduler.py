"""The runtime's batch scheduler with a counting batcher: when waiting requests join a running batch.

The batcher is a real, trivial one (each sequence counts down its own number of steps and emits
the step numbers it was stepped at), so the assertions see exactly at which scheduler step each
request joined.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from voxbox.runtime.batching import BatchConfig, Scheduler


class Counting:
    """Sequence = [steps left, steps seen]; ``step`` emits the global step number per sequence."""

    def __init__(self, max_batch: int, join_every: int) -> None:
        self.max_batch = max_batch
        self.join_every = join_every
        self.steps = 0
        self.active: list[list[Any]] = []
        self.admitted_at: list[int] = []
        self.gate = threading.Event()  # steps wait for it: the test controls the pace
        self.gate.set()
        self.blocked = threading.Event()  # set when a step finds the gate closed (the batch is held)
        self.pace = 0.002  # seconds per step

    def admit(self, requests: list[int]) -> list[list[Any]]:
        seqs = [[n, []] for n in requests]
        self.admitted_at += [self.steps] * len(requests)
        self.active += seqs
        return seqs

    def step(self) -> list[tuple[Any, list[int], bool]]:
        if not self.gate.is_set():
            self.blocked.set()
        self.gate.wait()
        time.sleep(self.pace)
        self.steps += 1
        out = []
        for s in self.active:
            s[0] -= 1
            out.append((s, [self.steps], s[0] <= 0))
        return out

    def drop(self, handle: Any) -> None:
        self.active.remove(handle)


def _run(sched: Scheduler[Any, Any], n: int, results: list[list[int]]) -> threading.Thread:
    def go() -> None:
        results.append(list(sched.submit(n)))

    t = threading.Thread(target=go)
    t.start()
    return t


def _wait_steps(b: Counting, n: int) -> None:
    deadline = time.monotonic() + 10
    while b.steps < n and time.monotonic() < deadline:
        time.sleep(0.001)


def test_requests_join_a_running_batch_at_the_next_step_by_default():
    b = Counting(max_batch=16, join_every=1)
    sched = Scheduler(b, BatchConfig(max_batch=16, window_ms=0), name="count")
    try:
        out: list[list[int]] = []
        long = _run(sched, 200, out)
        _wait_steps(b, 10)
        b.gate.clear()  # hold the batch between steps while the newcomer arrives
        assert b.blocked.wait(10)  # a step already past the gate has finished: the count is settled
        at = b.steps
        short = _run(sched, 3, out)
        time.sleep(0.05)
        b.gate.set()
        short.join(10)
        long.join(10)
        assert b.admitted_at[1] in (at, at + 1)  # joined at the next step
        assert sched.stats.joined_running == 1
    finally:
        sched.close()


def _burst(b: Counting, sched: Scheduler[Any, Any], out: list[list[int]], followers: int) -> tuple[int, list[int]]:
    """During a long decode: one arrival (A) after a quiet spell, then ``followers`` right after
    A joined. Returns (A's admission step, the followers' admission steps)."""
    long = _run(sched, 400, out)
    _wait_steps(b, 20)
    b.gate.clear()
    first = _run(sched, 3, out)
    time.sleep(0.05)
    b.gate.set()
    deadline = time.monotonic() + 10
    while len(b.admitted_at) < 2 and time.monotonic() < deadline:
        time.sleep(0.0005)
    b.gate.clear()  # hold the batch while the followers arrive
    rest = [_run(sched, 3, out) for _ in range(followers)]
    time.sleep(0.05)
    b.gate.set()
    for t in [first, *rest]:
        t.join(10)
    long.join(20)
    return b.admitted_at[1], b.admitted_at[2:]


def test_join_every_gathers_arrivals_into_one_admission():
    """A lone arrival after a quiet spell joins at the next step; two more right behind it wait
    (fewer than an eighth of 64 slots) and join together join_every steps after it."""
    b = Counting(max_batch=64, join_every=6)
    b.pace = 0.005
    sched = Scheduler(b, BatchConfig(max_batch=64, window_ms=0), name="count")
    try:
        a, rest = _burst(b, sched, [], 2)
        assert len(set(rest)) == 1  # one admission for both
        assert rest[0] == a + 6  # not at the next step: join_every steps after A
    finally:
        sched.close()


def test_join_every_lets_a_crowd_join_at_once():
    """Eight waiting (an eighth of 64 slots) do not wait for join_every."""
    b = Counting(max_batch=64, join_every=50)
    b.pace = 0.005
    sched = Scheduler(b, BatchConfig(max_batch=64, window_ms=0), name="count")
    try:
        a, rest = _burst(b, sched, [], 8)
        assert len(rest) == 8 and len(set(rest)) == 1 and rest[0] - a < 10
    finally:
        sched.close()


class Warming(Counting):
    """Counting, plus ``pieces`` of idle-time warm-up (each ``pace`` long); records whether any
    piece ran while a sequence was active."""

    def __init__(self, pieces: int, fail_at: int | None = None) -> None:
        super().__init__(max_batch=8, join_every=1)
        self.pieces, self.fail_at = pieces, fail_at
        self.warmed = 0
        self.warmed_while_active = 0

    def warm(self) -> bool:
        if self.fail_at is not None and self.warmed == self.fail_at:
            raise RuntimeError("capture failed")
        if self.active:
            self.warmed_while_active += 1
        time.sleep(self.pace)
        self.warmed += 1
        return self.warmed < self.pieces


def test_idle_warm_up_runs_between_requests_never_during_a_batch():
    b = Warming(pieces=40)
    b.pace = 0.005
    sched = Scheduler(b, BatchConfig(max_batch=8, window_ms=0), name="warm")
    try:
        time.sleep(0.03)  # a few pieces done, most left
        out: list[list[int]] = []
        t = _run(sched, 30, out)  # arrives mid warm-up: served after at most one piece
        t.join(10)
        assert out == [list(range(1, 31))]
        deadline = time.monotonic() + 10
        while b.warmed < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert b.warmed == 40 and sched.stats.warmed == 40  # the rest done once idle again, then no more
        assert b.warmed_while_active == 0
        time.sleep(0.05)
        assert b.warmed == 40
    finally:
        sched.close()


def test_a_failing_warm_up_stops_and_the_model_still_serves():
    b = Warming(pieces=10, fail_at=2)
    sched = Scheduler(b, BatchConfig(max_batch=8, window_ms=0), name="warm")
    try:
        deadline = time.monotonic() + 10
        while sched.stats.warmed < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        out: list[list[int]] = []
        _run(sched, 3, out).join(10)
        assert out == [[1, 2, 3]]
        assert sched.stats.warmed == 3 and b.warmed == 2  # two pieces, then the failure: no more tries
    finally:
        sched.close()
