"""``voxbox serve --ray``: start (or join) a Ray cluster, deploy voxbox on Ray Serve, wait for a signal.

``voxbox.server.cli.serve`` builds the same :class:`ServerSettings` as the plain server and hands
them here with the Serve knobs. Ctrl-C / SIGTERM deletes the application (Serve drains each
replica for up to ``graceful_shutdown_timeout_s``); a local Ray instance started here stops with it.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

import typer

from voxbox.errors import EngineUnavailableError
from voxbox.ray_serve.config import RayServeOptions

if TYPE_CHECKING:
    from voxbox.hardware.detect import MachineInfo
    from voxbox.server.settings import ServerSettings

__all__ = ["cluster_machine", "init_ray", "ray_options", "require_ray", "serve_on_ray"]

log = logging.getLogger("voxbox.ray")
INSTALL = "pip install 'voxbox[ray]'"


def require_ray(what: str = "--ray") -> None:
    import importlib.util

    for mod in ("ray", "ray.serve") if what == "--ray" else ("ray", "ray.data"):
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise EngineUnavailableError(f"{what} needs Ray ({mod} is not installed)", install_hint=INSTALL)


def ray_options(*, address: str | None = None, deploy: list[str] | None = None, replicas: str | None = None,
                target_ongoing: float | None = None, max_ongoing: int | None = None,
                replica_gpus: float | None = None, replica_cpus: float | None = None) -> RayServeOptions:
    """The flags of ``voxbox serve --ray`` as :class:`RayServeOptions` (``--queue-size`` is the
    settings' and becomes each deployment's ``max_queued_requests``)."""
    from voxbox.ray_serve.config import parse_replicas

    lo, hi = parse_replicas(replicas) if replicas is not None else (1, 1)
    return RayServeOptions(address=address, deploy=tuple(deploy or ()), min_replicas=lo, max_replicas=hi,
                           target_ongoing=target_ongoing, max_ongoing=max_ongoing, replica_gpus=replica_gpus,
                           replica_cpus=replica_cpus)


def init_ray(address: str | None, **kwargs: Any) -> bool:
    """Join ``address`` or start a local instance; True when this process started Ray (and owns it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
        return False
    ray.init(log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    return True


def cluster_machine(device: str, timeout: float = 120.0) -> MachineInfo | None:
    """The hardware the model replicas will run on: detected by a tiny task on a GPU node when the
    cluster has GPUs (the driver may be a CPU-only head node), else None (every replica on CPUs)."""
    import ray

    if device == "cpu" or not ray.cluster_resources().get("GPU"):
        return None

    @ray.remote(num_gpus=0.01, num_cpus=0)
    def detect_there() -> Any:
        from voxbox.hardware.detect import detect

        return detect()

    try:
        return ray.get(detect_there.remote(), timeout=timeout)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - plan from this machine instead
        log.warning("could not detect a GPU node's hardware (%s); planning from this machine", exc)
        from voxbox.hardware.detect import detect

        return detect()


def serve_on_ray(settings: ServerSettings, options: RayServeOptions) -> None:
    """Deploy and block until SIGINT/SIGTERM."""
    require_ray("--ray")
    import ray
    from ray import serve

    owned = init_ray(options.address)
    try:
        from voxbox.ray_serve.app import build_application

        machine = cluster_machine(settings.models.device)
        app, plans = build_application(settings, options, machine)
        for plan in plans:
            typer.echo(f"voxbox: {plan.describe()}", err=True)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            serve.run(app, name=options.app_name, route_prefix="/")
            shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
            typer.echo(f"voxbox: serving on Ray at http://{shown}:{settings.port}/ (API at /v1); "
                       f"Ray dashboard and `serve status` show the replicas", err=True)
            while not stop.wait(1.0):
                pass
            typer.echo("voxbox: stopping (deleting the Serve application)", err=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            try:
                serve.delete(options.app_name)
            except Exception as exc:  # noqa: BLE001 - shutting down either way
                log.warning("deleting the Serve application failed: %s", exc)
            if owned:
                serve.shutdown()
    finally:
        if owned:
            ray.shutdown()
