"""The in-process runner: the same workers as the Ray actors, in this process.

Decoding runs in a small thread pool (one input ahead of the engine per slot); the engine runs in
the worker's :class:`~voxbox.runtime.sync.SyncRuntime`, whose admission lets ``concurrency``
inputs at the engine at once (a batchable engine's scheduler batches them).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

from voxbox.batch.inputs import AudioItem, SpeakItem
from voxbox.batch.work import (
    Speaker,
    SpeakJob,
    TranscribeJob,
    Transcriber,
    verify_record,
)

__all__ = ["speak_local", "transcribe_local"]

Record = dict[str, Any]


def _drain(futures: list[Future[Any]], pool: ThreadPoolExecutor, on_done: Callable[[Any], None]) -> None:
    try:
        for fut in as_completed(futures):
            on_done(fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # an interruption: stop starting new inputs
        raise


def transcribe_local(items: list[AudioItem], job: TranscribeJob, on_record: Callable[[Record], None]) -> None:
    worker = Transcriber(job)
    done = False
    try:
        pool = ThreadPoolExecutor(max_workers=job.model.concurrency + 1, thread_name_prefix="voxbox-batch")
        futures = [pool.submit(worker, item) for item in items]
        _drain(futures, pool, on_record)
        pool.shutdown(wait=True)
        done = True
    finally:
        worker.close(interrupted=not done)


def speak_local(items: list[SpeakItem], job: SpeakJob, verify: TranscribeJob | None,
                on_result: Callable[[Record, bytes | None], None]) -> None:
    speaker = Speaker(job)
    verifier = Transcriber(verify) if verify is not None else None
    done = False
    try:

        def one(item: SpeakItem) -> tuple[Record, bytes | None]:
            record, data = speaker(item)
            if verifier is not None:
                record = verify_record(verifier, record, data)
            return record, data

        pool = ThreadPoolExecutor(max_workers=job.model.concurrency + 1, thread_name_prefix="voxbox-batch")
        futures = [pool.submit(one, item) for item in items]
        _drain(futures, pool, lambda out: on_result(*out))
        pool.shutdown(wait=True)
        done = True
    finally:
        if verifier is not None:
            verifier.close(interrupted=not done)
        speaker.close(interrupted=not done)
