"""The Serve application: an ingress deployment running voxbox's FastAPI app, and one deployment per
catalog model (:class:`~voxbox.ray_serve.replica.ModelReplica`).

::

    app, plans = build_application(settings, RayServeOptions(min_replicas=1, max_replicas=4))
    serve.run(app, name="voxbox", route_prefix="/")

The ingress's runtime has a catalog of the deployed models only and a loader that returns a
:class:`~voxbox.ray_serve.remote.RemoteEngine` bound to the model's ``DeploymentHandle``; its
admission lets through what the replicas can hold, so Serve does the queueing (``max_queued_requests``
-> 429) and the routing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ray import serve

from voxbox.ray_serve.config import ModelDeployment, RayServeOptions, plan_deployments
from voxbox.ray_serve.remote import RemoteEngine
from voxbox.ray_serve.replica import ModelReplica
from voxbox.runtime import Catalog, CatalogEntry, RuntimeConfig

if TYPE_CHECKING:
    from voxbox.hardware.detect import MachineInfo
    from voxbox.server.settings import ServerSettings

__all__ = ["INGRESS", "VoxboxIngress", "build_application", "ingress_settings"]

log = logging.getLogger("voxbox.ray")

INGRESS = "ingress"
#: Requests one ingress replica handles at once (an asyncio app: streams mostly wait on replicas).
INGRESS_ONGOING = 1000


def ingress_settings(settings: ServerSettings, names: list[str]) -> ServerSettings:
    """The ingress keeps every remote model "loaded" (a handle and its EngineInfo), admits what
    the replicas can hold, and preloads only models that are deployed."""
    m = settings.models
    wanted = ([m.tts, m.asr] if m.preload_defaults else []) + list(m.preload)
    models = m.model_copy(update={"ttl": -1.0, "max_loaded": max(1, len(names)), "memory_budget_gb": None,
                                  "preload_defaults": False, "preload": [n for n in wanted if n in names]})
    # each model's gate admits what its replicas can hold (RemoteEngine.info.max_concurrency) and
    # queues nothing: past that the ingress refuses at once (429), before decoding an upload
    admission = settings.admission.model_copy(update={"max_concurrency": None, "queue_size": 0})
    return settings.model_copy(update={"models": models, "admission": admission})


@serve.ingress()
class VoxboxIngress:
    """The HTTP front: ``create_app`` over a runtime whose engines are the model deployments."""

    def __init__(self, settings: ServerSettings, plans: list[ModelDeployment], handles: dict[str, Any]) -> None:
        self.catalog = Catalog(e for p in plans for e in p.entries)
        self.settings = ingress_settings(settings, self.catalog.names())
        self.plans = {p.entry.key: p for p in plans}
        self.handles = handles

    def _load(self, entry: CatalogEntry) -> RemoteEngine:
        plan = self.plans[entry.key]
        # what the replicas can hold at most, running and queued in Serve
        capacity = plan.max_replicas * plan.max_ongoing + plan.max_queued
        return RemoteEngine.connect(self.handles[plan.name], entry.name, concurrency=capacity,
                                    timeout=self.settings.admission.request_timeout)

    def __serve_build_asgi_app__(self) -> Any:
        from voxbox.server.app import create_app
        from voxbox.server.cli import configure_logging

        configure_logging(self.settings.log_level)
        return create_app(self.settings, loader=self._load, catalog=self.catalog)


def replica_config(settings: ServerSettings, plan: ModelDeployment) -> RuntimeConfig:
    """A replica's runtime: its one model always loaded; Serve never sends more than max_ongoing."""
    a = settings.admission
    return RuntimeConfig(device=plan.device, threads=plan.threads, ttl=-1.0, max_loaded=1, memory_budget=None,
                         max_concurrency=a.max_concurrency, queue_size=plan.max_ongoing,
                         request_timeout=a.request_timeout, workers=a.workers)


def build_application(settings: ServerSettings, options: RayServeOptions,
                      machine: MachineInfo | None = None) -> tuple[Any, list[ModelDeployment]]:
    """(the Serve application to ``serve.run``, the deployment plans)."""
    catalog = Catalog.default(settings.models.local, models_dir=settings.models.dir)
    plans = plan_deployments(catalog, settings, options, machine)
    handles: dict[str, Any] = {}
    deployment: Any = serve.deployment  # (its overloads confuse type checkers)
    for plan in plans:
        dep = deployment(ModelReplica).options(**plan.serve_options())
        handles[plan.name] = dep.bind(plan.entry, replica_config(settings, plan))
    ingress = deployment(VoxboxIngress).options(
        name=INGRESS, num_replicas=options.ingress_replicas, max_ongoing_requests=INGRESS_ONGOING,
        ray_actor_options={"num_cpus": options.ingress_cpus}, health_check_timeout_s=60)
    return ingress.bind(settings, plans, handles), plans
