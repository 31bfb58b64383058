"""Prometheus metrics of one server instance (its own registry, so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BatchingCollector", "Metrics", "MetricsObserver"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("voxbox_requests_total", "HTTP requests by route and status.",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("voxbox_request_duration_seconds", "Request wall time until the last byte.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttfa = Histogram("voxbox_time_to_first_audio_seconds",
                              "Speech requests: arrival to the first audio chunk ready to send.",
                              ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.audio_produced = Counter("voxbox_audio_produced_seconds_total", "Seconds of speech synthesized.",
                                      ["model"], registry=r)
        self.audio_consumed = Counter("voxbox_audio_consumed_seconds_total", "Seconds of audio transcribed.",
                                      ["model"], registry=r)
        self.rtf = Histogram("voxbox_rtf", "Real-time factor per request (engine compute seconds / audio seconds).",
                             ["model"], buckets=_RTF_BUCKETS, registry=r)
        self.queue_depth = Gauge("voxbox_queue_depth", "Requests waiting for a slot.", ["model"], registry=r)
        self.running = Gauge("voxbox_running_requests", "Requests holding a slot.", ["model"], registry=r)
        self.rejected = Counter("voxbox_rejected_total", "Requests refused by admission control (429).",
                                ["model"], registry=r)
        self.loaded = Gauge("voxbox_model_loaded", "1 while the model is loaded.", ["model"], registry=r)
        self.load_time = Histogram("voxbox_model_load_seconds", "Model load wall time.", ["model"],
                                   buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.voice_cache = Counter(
            "voxbox_voice_cache_total", "Voice encoding lookups: memory/disk hits, miss (encoded).", ["result"],
            registry=r,
        )
        self.cancelled = Counter("voxbox_cancelled_streams_total", "Streams stopped because the client went away.",
                                 ["model"], registry=r)


class MetricsObserver:
    """The runtime's :class:`~voxbox.runtime.Observer` hooks, recorded in :class:`Metrics`.

    Every ``model`` label is a catalog name (never a client-chosen string or a path)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def model_loaded(self, model: Any) -> None:
        self.metrics.loaded.labels(model.name).set(1)
        self.metrics.load_time.labels(model.name).observe(model.load_seconds)

    def model_unloaded(self, model: Any) -> None:
        self.metrics.loaded.labels(model.name).set(0)

    def queue_changed(self, label: str, waiting: int, running: int) -> None:
        self.metrics.queue_depth.labels(label).set(waiting)
        self.metrics.running.labels(label).set(running)

    def rejected(self, label: str) -> None:
        self.metrics.rejected.labels(label).inc()


class BatchingCollector(Collector):
    """The batch schedulers' counters, read at scrape time (``schedulers()`` returns the live ones).

    ``voxbox_batch_rows_total / voxbox_batch_steps_total`` is the mean batch size; the engine's
    own batcher counters (e.g. torch-whisper's encoder admissions and host seconds per step) come
    as ``voxbox_batcher_stat{model, stat}``. The model label is the scheduler's catalog name."""

    def __init__(self, schedulers: Callable[[], Any]) -> None:
        self._schedulers = schedulers

    def collect(self) -> Iterator[Any]:
        counters = {
            "steps": ("voxbox_batch_steps", "Batched decoder steps."),
            "rows": ("voxbox_batch_rows", "Sequences stepped, summed over steps (rows / steps = mean batch)."),
            "admitted": ("voxbox_batch_admitted", "Requests admitted into a batch."),
            "joined_running": ("voxbox_batch_joined_running",
                               "Requests admitted while other sequences were mid-decode."),
            "cancelled": ("voxbox_batch_cancelled", "Batched requests stopped before they finished."),
        }
        gauges = {
            "active": ("voxbox_batch_active", "Sequences in the batch now."),
            "pending": ("voxbox_batch_pending", "Requests waiting to join the batch."),
            "max_active": ("voxbox_batch_max_active", "The largest batch stepped so far."),
        }
        fams: dict[str, Any] = {k: CounterMetricFamily(n, h, labels=["model"]) for k, (n, h) in counters.items()}
        fams.update({k: GaugeMetricFamily(n, h, labels=["model"]) for k, (n, h) in gauges.items()})
        slots = GaugeMetricFamily("voxbox_batch_slots", "Sequences one batch holds at most.", labels=["model"])
        stat = GaugeMetricFamily("voxbox_batcher_stat", "The engine batcher's own counters.",
                                 labels=["model", "stat"])
        for sched in list(self._schedulers()):
            st = sched.stats
            for key, fam in fams.items():
                fam.add_metric([sched.name], float(getattr(st, key)))
            slots.add_metric([sched.name], float(sched.max_batch))
            own = getattr(sched.batcher, "stats", None)
            if callable(own):
                for key, value in own().items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        stat.add_metric([sched.name, str(key)], float(value))
        yield from fams.values()
        yield slots
        yield stat
