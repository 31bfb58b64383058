"""The Ray Data runner: decoding as CPU tasks, the engine as an actor pool, the driver writing records.

::

    inputs ──from_items──► decode (map, CPU tasks) ──► Transcriber actors (map_batches: B inputs per call,
                                                        run together through the actor's runtime)
                                                     ──► driver: iter_rows → store.write + progress

Each actor holds a :class:`~voxbox.batch.work.Transcriber` (a one-model ``SyncRuntime``), the very
worker the in-process runner uses, so records are the same. Actors are restarted when they die
and their batch is retried (Ray Data's defaults for actor pools: ``max_restarts=-1``,
``max_task_retries=-1``), so a lost worker costs its batch, never the job. Records cross as one
JSON string each (no Arrow schema to agree on between batches).

Input paths (and speech references) must be readable where the tasks run: a shared filesystem
on a multi-node cluster. Speech audio comes back to the driver as bytes, and the driver writes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voxbox.batch.inputs import AudioItem, SpeakItem
from voxbox.batch.work import (
    ASR_RATE,
    Speaker,
    SpeakJob,
    TranscribeJob,
    Transcriber,
    batch_size_for,
    decode_file,
    verify_record,
)

__all__ = ["ActorPlan", "plan_actors", "speak_ray", "transcribe_ray"]

Record = dict[str, Any]
#: CPUs a decode task asks for (decoding is short; several run beside the actors).
DECODE_CPUS = 0.25


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus: float
    gpus: float
    batch: int
    device: str
    reason: str

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.actors} actor(s) x ({self.cpus:g} CPU{gpu}), {self.batch} input(s) per batch; {self.reason}"


def plan_actors(job_model: Any, *, actors: int | None, cpus: float | None, gpus: float | None,
                batch: int | None, device: str, reserve_cpus: float = 2 * 0.25) -> ActorPlan:
    """Actors and their resources from the cluster and the hardware plan (flags win).

    GPUs in the cluster (and the engine placed on a GPU by the plan): one actor per GPU by
    default, each the GPU share ``gpus / actors`` (so ``--actors`` above the GPU count shares
    GPUs), a batch of the engine's batch size. CPUs only: actors of ``cpus`` CPUs each (default 1)
    filling the cluster but ``reserve_cpus`` (decode tasks, a verifier); the engine gets one thread
    per CPU.
    """
    import ray

    from voxbox.ray_serve.cli import cluster_machine

    res = ray.cluster_resources()
    total_gpus = float(res.get("GPU", 0.0))
    total_cpus = float(res.get("CPU", 1.0))
    entry = job_model.entry
    on_gpu = False
    reason = "CPU workers"
    if gpus is not None:
        on_gpu = gpus > 0
        reason = f"{gpus:g} GPU per actor as asked"
    elif total_gpus and device != "cpu":
        from voxbox.engines.placement import auto_plan
        from voxbox.engines.registry import get_spec

        machine = cluster_machine(device)
        plan = auto_plan(entry.engine, get_spec(entry.engine).components, machine) if machine is not None else None
        on_gpu = plan is not None and plan.main.on_gpu
        reason = (f"the plan puts {entry.engine} on {plan.main.device} ({plan.main.dtype})" if plan is not None
                  else "no GPU could be detected")
    if on_gpu:
        n = actors or max(1, int(total_gpus))
        share = gpus if gpus is not None else round(min(1.0, total_gpus / n), 3)
        b = batch or batch_size_for(entry, True)
        return ActorPlan(n, cpus if cpus is not None else 1.0, share, b, "auto" if device == "cpu" else device, reason)
    per = cpus if cpus is not None else 1.0
    n = actors or max(1, math.floor((total_cpus - reserve_cpus) / per))
    return ActorPlan(n, per, 0.0, batch or batch_size_for(entry, False), "cpu", reason)


def _pool(n: int) -> Any:
    """A fixed pool of ``n`` actors, each with a second batch in flight (its inputs ready when it
    finishes the current one)."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=2)


def _init(address: str | None) -> None:
    import logging

    from ray.data import DataContext

    from voxbox.ray_serve.cli import init_ray

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)  # voxbox reports progress and the plan itself
    init_ray(address)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # voxbox draws its own (files, audio hours, x-realtime)
    ctx.print_on_execution_start = False


class _Decode:
    """A CPU task per input: decode + resample to the engine's rate."""

    def __init__(self, rate: int, max_seconds: float) -> None:
        self.rate, self.max_seconds = rate, max_seconds

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        audio, seconds, error = decode_file(row["path"], self.rate, self.max_seconds)
        samples = audio.samples if audio is not None else np.zeros(0, np.float32)
        return {**row, "samples": samples, "decode_s": seconds, "error": error or ""}


class _TranscribeActor:
    def __init__(self, job: TranscribeJob) -> None:
        self.worker = Transcriber(job)
        self.pool = ThreadPoolExecutor(max_workers=max(1, job.model.concurrency))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from voxbox.types import Audio

        def one(i: int) -> str:
            item = AudioItem(str(batch["key"][i]), str(batch["path"][i]), json.loads(str(batch["extra"][i])))
            error = str(batch["error"][i]) or None
            audio = None if error else Audio(np.asarray(batch["samples"][i], dtype=np.float32), ASR_RATE)
            return json.dumps(self.worker(item, audio, float(batch["decode_s"][i]), error), default=str)

        return {"record": np.array(list(self.pool.map(one, range(len(batch["key"])))), dtype=object)}


def transcribe_ray(items: list[AudioItem], job: TranscribeJob, on_record: Callable[[Record], None], *,
                   address: str | None, **plan_kw: Any) -> ActorPlan:
    import ray

    _init(address)
    plan = plan_actors(job.model, device=job.model.device, **plan_kw)
    job = replace(job, model=replace(job.model, device=plan.device, concurrency=plan.batch,
                                     threads=job.model.threads or max(1, math.ceil(plan.cpus))))
    rows = [{"key": it.key, "path": it.path, "extra": json.dumps(it.extra, default=str)} for it in items]
    ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
    ds = ds.map(_Decode(ASR_RATE, job.max_seconds), num_cpus=DECODE_CPUS)
    ds = ds.map_batches(_TranscribeActor, fn_constructor_kwargs={"job": job}, batch_size=plan.batch,
                        compute=_pool(plan.actors), num_cpus=plan.cpus, num_gpus=plan.gpus or None,
                        batch_format="numpy")
    for row in ds.iter_rows():
        on_record(json.loads(row["record"]))
    return plan


class _SpeakActor:
    def __init__(self, job: SpeakJob) -> None:
        self.worker = Speaker(job)
        self.pool = ThreadPoolExecutor(max_workers=max(1, job.model.concurrency))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [SpeakItem(**json.loads(str(s))) for s in batch["item"]]
        out = list(self.pool.map(self.worker, items))
        return {"record": np.array([json.dumps(r, default=str) for r, _ in out], dtype=object),
                "audio": np.array([d if d is not None else b"" for _, d in out], dtype=object)}


class _VerifyActor:
    def __init__(self, job: TranscribeJob) -> None:
        self.worker = Transcriber(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for rec, data in zip(batch["record"], batch["audio"], strict=True):
            records.append(
                json.dumps(verify_record(self.worker, json.loads(str(rec)), bytes(data) or None), default=str)
            )
        return {"record": np.array(records, dtype=object), "audio": batch["audio"]}


def speak_ray(items: list[SpeakItem], job: SpeakJob, verify: TranscribeJob | None,
              on_result: Callable[[Record, bytes | None], None], *, address: str | None,
              **plan_kw: Any) -> ActorPlan:
    from dataclasses import asdict

    import ray

    _init(address)
    reserve = (plan_kw.get("cpus") or 1.0) if verify is not None else 0.0
    plan = plan_actors(job.model, device=job.model.device, reserve_cpus=reserve, **plan_kw)
    job = replace(job, model=replace(job.model, device=plan.device, concurrency=plan.batch,
                                     threads=job.model.threads or max(1, math.ceil(plan.cpus))))
    ds: Any = ray.data.from_items([{"item": json.dumps(asdict(it), default=str)} for it in items],
                             override_num_blocks=max(1, min(len(items), 64)))
    ds = ds.map_batches(
        _SpeakActor, fn_constructor_kwargs={"job": job}, batch_size=plan.batch, compute=_pool(plan.actors),
        num_cpus=plan.cpus, num_gpus=plan.gpus or None, batch_format="numpy",
    )
    if verify is not None:
        vjob = replace(verify, model=replace(verify.model, device=plan.device, threads=job.model.threads))
        ds = ds.map_batches(_VerifyActor, fn_constructor_kwargs={"job": vjob}, batch_size=plan.batch,
                            compute=_pool(1), num_cpus=plan.cpus, num_gpus=plan.gpus or None, batch_format="numpy")
    for row in ds.iter_rows():
        data = bytes(row["audio"]) or None
        on_result(json.loads(row["record"]), data)
    return plan
