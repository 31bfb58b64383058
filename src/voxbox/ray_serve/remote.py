"""The ingress side of the seam: an object with the engine protocol whose work runs in a model
deployment's replicas.

The ingress app's :class:`~voxbox.runtime.Runtime` "loads" a :class:`RemoteEngine` per catalog
model (its loader fetches the replica's ``EngineInfo``), so the routes call ``engine.stream()`` /
``engine.transcribe()`` in the runtime's worker threads as always; those calls go through a
``DeploymentHandle`` (streaming for both, so audio chunks and segments flow as the replica makes
them). Serve picks the replica (fewest ongoing requests), queues and autoscales.

Errors come back as the plain server would raise them:

* a voxbox error in the replica (bad input, unknown voice, timeout) is re-raised as itself;
* Serve's backpressure (``max_queued_requests`` passed) becomes :class:`CapacityError` — 429 with a
  ``Retry-After`` from the calls this ingress has seen;
* a replica that died (killed, OOM, node lost) becomes :class:`ServiceUnavailableError` (503); a
  call that had produced nothing yet is retried on another replica first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from voxbox.engines.base import EncodedVoice, SpeechStream
from voxbox.errors import (
    CapacityError,
    RequestCancelledError,
    ServiceUnavailableError,
    VoxboxError,
)
from voxbox.types import Audio, CancelToken, EngineInfo, StageTimings, TranscriptionInfo

__all__ = ["RemoteEngine", "convert_error"]

log = logging.getLogger("voxbox.ray")

#: Retries of a call that died with its replica before it produced anything.
RETRIES = 2


def _dead_replica_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import (
        ActorDiedError,
        ActorUnavailableError,
        RayActorError,
        WorkerCrashedError,
    )
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return (ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError, ReplicaUnavailableError,
            DeploymentUnavailableError)


def convert_error(exc: BaseException, model: str, retry_after: float) -> BaseException:
    """A Ray/Serve exception as the exception the plain server would have raised."""
    from ray.exceptions import RayTaskError, TaskCancelledError
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError):
        wait = exc.retry_after_s if exc.retry_after_s else retry_after
        return CapacityError(f"too many requests queued for model {model!r}; retry later", retry_after=wait)
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, VoxboxError):
            return cause  # the engine's own error, without Ray's wrapper and remote traceback
        if isinstance(cause, _dead_replica_errors()) or not isinstance(cause, Exception):
            return ServiceUnavailableError(f"the replica serving model {model!r} failed; retry")
        return cause  # an unexpected engine error: the server answers 500 without details, as always
    if isinstance(exc, TaskCancelledError):
        return RequestCancelledError("the remote work was cancelled")
    if isinstance(exc, _dead_replica_errors()):
        return ServiceUnavailableError(f"the replica serving model {model!r} went away; retry")
    return exc


class _ServiceTimes:
    """Recent call durations of one model, for Retry-After when Serve's queue is full."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mean = 1.0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.mean = 0.8 * self.mean + 0.2 * max(0.0, seconds)

    def retry_after(self) -> float:
        return float(max(1, math.ceil(self.mean)))


class RemoteEngine:
    """A TTS or ASR engine whose calls run in a Serve deployment (``handle``)."""

    def __init__(self, handle: Any, model: str, info: EngineInfo, *, concurrency: int) -> None:
        self.handle = handle
        self.model = model
        # The ingress admits up to every replica's capacity; Serve does the queueing and backpressure.
        extra = dict(info.extra or {})
        extra["ray_deployment"] = getattr(handle, "deployment_name", None)
        self.info = EngineInfo(**{**info.__dict__, "max_concurrency": max(1, concurrency), "extra": extra})
        self.times = _ServiceTimes()

    @classmethod
    def connect(cls, handle: Any, model: str, *, concurrency: int, timeout: float = 600.0) -> RemoteEngine:
        """Blocking (a worker thread): wait for a replica and fetch its EngineInfo."""
        info = _unary(handle.engine_info, (), model, _ServiceTimes(), timeout=timeout)
        return cls(handle, model, info, concurrency=concurrency)

    # -- the engine protocol -------------------------------------------------------------------------
    def stream(self, text: str, voice: Any = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        if kwargs:
            options = {**(options.given() if hasattr(options, "given") else dict(options or {})), **kwargs}
        call = _Streamed(self, "speak", (text, voice, speed, options), cancel)
        head = call.first()
        _, sample_rate, details = head

        def gen(timings: StageTimings) -> Iterator[Any]:
            for item in call.rest():
                if item[0] == "chunk":
                    yield item[1]
                elif item[0] == "end":
                    for stage, seconds in item[1].items():
                        timings.add(stage, seconds)
                    details.update(item[2])

        return SpeechStream(gen, sample_rate, cancel=cancel, details=details)

    def transcribe(self, audio: Any, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Any], TranscriptionInfo]:
        if kwargs:
            options = {**(options.given() if hasattr(options, "given") else dict(options or {})), **kwargs}
        call = _Streamed(self, "transcribe", (audio, language, prompt, word_timestamps, task, options), cancel)
        _, fields, early = call.first()
        info = TranscriptionInfo(**fields)
        for stage, seconds in early.items():
            info.timings.add(stage, seconds)

        def segments() -> Iterator[Any]:
            for item in call.rest():
                if item[0] == "segment":
                    yield item[1]
                elif item[0] == "end":
                    for stage, seconds in item[1].items():
                        info.timings.add(stage, seconds - early.get(stage, 0.0))

        return segments(), info

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        return _unary(self.handle.encode_voice, (audio, transcript), self.model, self.times)  # type: ignore[no-any-return]

    def components(self) -> list[Any]:
        return []

    def close(self) -> None:
        """Nothing to free here: the replicas hold the model."""


def _unary(method: Any, args: tuple[Any, ...], model: str, times: _ServiceTimes, timeout: float | None = None) -> Any:
    dead = _dead_replica_errors()
    for attempt in range(RETRIES + 1):
        t0 = time.perf_counter()
        try:
            out = method.remote(*args).result(timeout_s=timeout)
            times.observe(time.perf_counter() - t0)
            return out
        except dead:
            if attempt == RETRIES:
                raise convert_error(ServiceUnavailableError("replica went away"), model, times.retry_after()) from None
            log.warning("a replica of %s went away; retrying the call", model)
        except Exception as exc:  # noqa: BLE001 - converted, never leaked with Ray's traceback
            raise convert_error(exc, model, times.retry_after()) from None
    raise AssertionError("unreachable")


class _Streamed:
    """One streaming call: the header is fetched at once (the replica validated the call), the rest
    lazily. A call whose replica died before its header is retried; the cancel token cancels it."""

    def __init__(self, engine: RemoteEngine, method: str, args: tuple[Any, ...], cancel: CancelToken | None) -> None:
        self.engine, self.method, self.args = engine, method, args
        self.cancel = cancel
        self.gen: Any = None
        self.t0 = time.perf_counter()

    def _start(self) -> Any:
        handle = self.engine.handle.options(stream=True)
        gen = getattr(handle, self.method).remote(*self.args)
        if self.cancel is not None:
            self.cancel.on_cancel(gen.cancel)
        return gen

    def first(self) -> Any:
        dead = _dead_replica_errors()
        for attempt in range(RETRIES + 1):
            if self.cancel is not None:
                self.cancel.check()
            self.gen = self._start()
            try:
                return next(self.gen)
            except StopIteration:
                raise ServiceUnavailableError(f"model {self.engine.model!r} returned nothing") from None
            except dead:
                if attempt == RETRIES:
                    raise ServiceUnavailableError(
                        f"the replica serving model {self.engine.model!r} went away; retry") from None
                log.warning("a replica of %s went away before answering; retrying", self.engine.model)
            except Exception as exc:  # noqa: BLE001
                raise self._convert(exc) from None
        raise AssertionError("unreachable")

    def rest(self) -> Iterator[Any]:
        done = False
        try:
            while True:
                try:
                    item = next(self.gen)
                except StopIteration:
                    done = True
                    self.engine.times.observe(time.perf_counter() - self.t0)
                    return
                except Exception as exc:  # noqa: BLE001 - converted, never leaked with Ray's traceback
                    done = True
                    raise self._convert(exc) from None
                yield item
        finally:
            if not done:
                self.gen.cancel()  # the consumer stopped early: stop the replica's work too

    def _convert(self, exc: BaseException) -> BaseException:
        if self.cancel is not None and self.cancel.cancelled:
            return RequestCancelledError(f"work stopped: {self.cancel.reason}")
        return convert_error(exc, self.engine.model, self.engine.times.retry_after())

