"""What ``voxbox serve --ray`` deploys: one :class:`ModelDeployment` per catalog model, with replica
resources taken from the hardware plan and the Serve knobs (replicas, autoscaling, backpressure).

Nothing here imports Ray: the plan is plain data, testable and printable before a cluster exists.

Resources per replica, in order:

* ``--replica-gpus`` / ``--replica-cpus`` when given;
* otherwise the planner's placement of the engine's components (:func:`voxbox.engines.placement.auto_plan`
  on the machine the replicas run on): a model placed on a GPU asks for the share of that GPU its
  components need (plus a fifth for activations), rounded up to a twentieth, so several small
  models (or several replicas of one) share a GPU and a large one takes a whole GPU; a model placed
  on the CPU asks for one CPU and no GPU, and its engine gets one thread per CPU it asked for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxbox.errors import BadInputError
from voxbox.runtime.catalog import Catalog, CatalogEntry

if TYPE_CHECKING:
    from voxbox.hardware.detect import MachineInfo
    from voxbox.server.settings import ServerSettings

__all__ = ["ModelDeployment", "RayServeOptions", "gpu_share", "parse_replicas", "plan_deployments"]

#: A GPU share is rounded up to this step (Ray accepts any fraction; coarse steps keep packing predictable).
GPU_STEP = 0.05
#: Memory beyond the planned weights a replica may use on its GPU (activations, allocator slack).
GPU_SLACK = 1.2


@dataclass(frozen=True)
class RayServeOptions:
    """The Serve knobs (``voxbox serve --ray`` flags). ``None`` = derived from the engine or settings."""

    address: str | None = None  # None: start a local Ray instance; "auto" or "HOST:PORT": join a cluster
    deploy: tuple[str, ...] = ()  # catalog names; () = default + preload + local models; ("all",) = all
    min_replicas: int = 1  # per model; 0 = scale to zero (the first request starts a replica)
    max_replicas: int = 1  # > min_replicas turns on autoscaling (num_replicas="auto")
    target_ongoing: float | None = None  # autoscaling target per replica; None = the engine's concurrency
    max_ongoing: int | None = None  # requests a replica holds at once; None = 2 x the engine's concurrency
    max_queued: int | None = None  # requests queued per model before 429; None = --queue-size
    replica_gpus: float | None = None  # GPU share per model replica; None = from the plan
    replica_cpus: float | None = None  # CPUs per model replica; None = 1
    ingress_replicas: int = 1
    ingress_cpus: float = 0.5  # the HTTP front decodes uploads and encodes audio
    app_name: str = "voxbox"

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise BadInputError(f"replicas must satisfy 0 <= min <= max and max >= 1, got "
                                f"{self.min_replicas}-{self.max_replicas}", param="replicas")
        for name in ("replica_gpus", "replica_cpus", "target_ongoing"):
            v = getattr(self, name)
            if v is not None and (v < 0 or (name != "replica_gpus" and v == 0)):
                raise BadInputError(f"{name.replace('_', '-')} must be positive, got {v}", param=name)
        if self.replica_gpus is not None and self.replica_gpus > 1 and self.replica_gpus != int(self.replica_gpus):
            raise BadInputError("replica-gpus above 1 must be a whole number of GPUs", param="replica_gpus")
        for name in ("max_ongoing", "ingress_replicas"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BadInputError(f"{name.replace('_', '-')} must be >= 1, got {v}", param=name)
        if self.max_queued is not None and self.max_queued < 0:
            raise BadInputError(f"max-queued must be >= 0, got {self.max_queued}", param="max_queued")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > self.min_replicas


def parse_replicas(text: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2) fixed; ``"1-4"`` -> autoscaled between 1 and 4; ``"0-4"`` scales to zero."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text or "")
    if m is None:
        raise BadInputError(f"--replicas takes N or MIN-MAX (e.g. 2 or 1-4), got {text!r}", param="replicas")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < max(1, lo):
        raise BadInputError(f"--replicas {text!r}: need MIN <= MAX and MAX >= 1", param="replicas")
    return lo, hi


@dataclass(frozen=True)
class ModelDeployment:
    """One Serve deployment: the model (first catalog name of its weights), its other names, and
    what each replica asks Ray for."""

    name: str  # the Serve deployment name
    entry: CatalogEntry
    entries: tuple[CatalogEntry, ...]  # every catalog name served by these weights (entry and its aliases)
    num_cpus: float
    num_gpus: float
    threads: int
    device: str
    concurrency: int  # requests one replica runs at once (its Runtime's admission)
    min_replicas: int
    max_replicas: int
    target_ongoing: float
    max_ongoing: int
    max_queued: int
    reason: str  # one sentence: where the replicas go and why
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``serve.deployment(...)`` / ``Deployment.options(...)``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        opts: dict[str, Any] = {
            "name": self.name, "ray_actor_options": actor, "max_ongoing_requests": self.max_ongoing,
            "max_queued_requests": self.max_queued,
            # a replica is healthy once its model is loaded; a load can take minutes for big models
            "health_check_period_s": 10, "health_check_timeout_s": 60, "graceful_shutdown_timeout_s": 20,
        }
        if self.max_replicas > self.min_replicas:
            opts["num_replicas"] = "auto"
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing,
                "upscale_delay_s": 5.0, "downscale_delay_s": 120.0,
            }
        else:
            opts["num_replicas"] = self.min_replicas
        return opts

    def describe(self) -> str:
        scale = (f"{self.min_replicas}-{self.max_replicas} replicas (autoscaled at {self.target_ongoing:g} "
                 f"ongoing/replica)" if self.max_replicas > self.min_replicas else f"{self.min_replicas} replica(s)")
        gpu = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        return (f"{self.name} [{', '.join(self.names)}]: {scale}, {self.num_cpus:g} CPU{gpu} each, "
                f"{self.max_ongoing} ongoing/replica, {self.max_queued} queued; {self.reason}")


def deployment_name(entry: CatalogEntry) -> str:
    """A Serve deployment name from a catalog name (Serve names allow no '#' or '/')."""
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "_", entry.name)


def _wanted(catalog: Catalog, settings: ServerSettings, deploy: tuple[str, ...]) -> list[CatalogEntry]:
    if deploy == ("all",):
        return catalog.entries()
    names = list(deploy) or [settings.models.tts, settings.models.asr, *settings.models.preload,
                             *settings.models.local]
    out: list[CatalogEntry] = []
    for name in dict.fromkeys(names):
        entry = catalog.get(name)
        if entry is None:
            if deploy:  # asked for by name: a typo must not pass silently
                raise BadInputError(f"--deploy {name!r}: not a catalog model (see voxbox serve --help for "
                                    f"--model NAME=ENGINE:PATH)", param="deploy")
            continue
        out.append(entry)
    return out


def gpu_share(need_bytes: int, total_bytes: int) -> float:
    """The GPU fraction a replica asks for: its planned bytes plus slack, rounded up to GPU_STEP."""
    if total_bytes <= 0:
        return 1.0
    share = math.ceil(need_bytes * GPU_SLACK / total_bytes / GPU_STEP) * GPU_STEP
    return round(min(1.0, max(GPU_STEP, share)), 2)


def _resources(entry: CatalogEntry, options: RayServeOptions, settings: ServerSettings,
               machine: MachineInfo | None) -> tuple[float, float, str, str]:
    """(cpus, gpus, device, reason) for one replica of ``entry``."""
    from voxbox.engines.registry import get_spec

    cpus = options.replica_cpus if options.replica_cpus is not None else 1.0
    device = settings.models.device
    if options.replica_gpus is not None:
        gpus = options.replica_gpus
        return cpus, gpus, (device if gpus else "cpu"), f"{gpus:g} GPU per replica as asked (--replica-gpus)."
    if device == "cpu" or machine is None or not machine.gpus:
        return cpus, 0.0, "cpu", "the replicas run on CPUs (no GPU in the cluster, or --device cpu)."
    from voxbox.engines.placement import auto_plan

    spec = get_spec(entry.engine)
    plan = auto_plan(entry.engine, spec.components, machine)
    on_gpu = [p for p in plan.placements if p.on_gpu]
    if not on_gpu:
        return cpus, 0.0, "cpu", f"the plan keeps it on the CPU ({plan.main.reason.rstrip('.')})."
    gpu = machine.gpu(on_gpu[0].gpu or 0) or machine.gpus[0]
    need = sum(p.bytes for p in on_gpu)
    share = gpu_share(need, gpu.total_memory)
    return (
        cpus,
        share,
        device,
        (
            f"the plan puts {', '.join(p.component for p in on_gpu)} on {gpu.name} "
            f"({need / 1e9:.1f} GB of {gpu.total_memory / 1e9:.0f} GB): {share:g} GPU per replica."
        ),
    )


def plan_deployments(catalog: Catalog, settings: ServerSettings, options: RayServeOptions,
                     machine: MachineInfo | None = None) -> list[ModelDeployment]:
    """One deployment per distinct weights among the wanted catalog names (aliases share one)."""
    from voxbox.engines.registry import get_spec

    by_key: dict[Any, list[CatalogEntry]] = {}
    for entry in _wanted(catalog, settings, options.deploy):
        by_key.setdefault(entry.key, [])
    for entry in catalog.entries():  # every name of a deployed model's weights is served
        if entry.key in by_key:
            by_key[entry.key].append(entry)
    out: list[ModelDeployment] = []
    for entries in by_key.values():
        first = entries[0]
        spec = get_spec(first.engine)
        concurrency = settings.admission.max_concurrency or max(1, spec.capabilities.max_concurrency)
        cpus, gpus, device, reason = _resources(first, options, settings, machine)
        max_ongoing = options.max_ongoing or 2 * concurrency
        out.append(ModelDeployment(
            name=deployment_name(first), entry=first, entries=tuple(entries), num_cpus=cpus,
            num_gpus=gpus, threads=max(1, math.ceil(cpus)), device=device, concurrency=concurrency,
            min_replicas=options.min_replicas, max_replicas=options.max_replicas,
            target_ongoing=options.target_ongoing or float(concurrency), max_ongoing=max_ongoing,
            max_queued=options.max_queued if options.max_queued is not None else settings.admission.queue_size,
            reason=reason))
    if not out:
        raise BadInputError("no catalog model to deploy (check --deploy, --tts-model, --asr-model)", param="deploy")
    return out

