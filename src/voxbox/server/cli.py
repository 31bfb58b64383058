"""``voxbox serve``: run the OpenAI-compatible server with uvicorn.

Flags override ``VOXBOX_*`` environment variables and ``.env``; unset flags leave them alone.
SIGTERM (or Ctrl-C): ``/health/ready`` answers 503 at once while the listener stays open, requests
in flight get up to ``--grace`` seconds to finish, what is left is cancelled (streams end cleanly),
then the models are unloaded and the process exits 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any, Optional

import typer

__all__ = ["build_settings", "configure_logging", "register", "serve"]


def configure_logging(level: str) -> None:
    """voxbox's own INFO lines (ready, model load/unload with timings, stopped streams), one each."""
    logger = logging.getLogger("voxbox")
    if not any(getattr(h, "_voxbox", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._voxbox = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def serve(
    host: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1; VOXBOX_HOST)."),
    port: Optional[int] = typer.Option(None, help="Port (default 8000; VOXBOX_PORT)."),
    model: Optional[list[str]] = typer.Option(
        None, "--model", help="Add a local model to the catalog: NAME=ENGINE:PATH (repeat)."
    ),
    tts_model: Optional[str] = typer.Option(None, "--tts-model", help="Default speech model name (tts-1 = hibari)."),
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="Default transcription model name (whisper-1)."),
    preload: Optional[list[str]] = typer.Option(None, "--preload", help="Extra model to load at start-up (repeat)."),
    no_preload: bool = typer.Option(False, "--no-preload", help="Do not load the default models at start-up."),
    ttl: Optional[float] = typer.Option(None, "--ttl", help="Idle seconds before a model is unloaded; -1 never."),
    max_loaded: Optional[int] = typer.Option(None, "--max-loaded", help="Models loaded at once (default 4)."),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", help="Requests run at once per model (default: the engine's)."
    ),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Requests that may wait per model."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Request timeout in seconds (504 beyond)."),
    max_upload_mb: Optional[float] = typer.Option(None, "--max-upload-mb", help="Largest upload in MB (default 25)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar=None, help="Require 'Authorization: Bearer KEY' (prefer VOXBOX_API_KEY)."
    ),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="Host header to accept (repeat)."),
    cors_origin: Optional[list[str]] = typer.Option(
        None, "--cors-origin", help="Browser origin allowed to call the API (repeat)."
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where uploaded voices and encodings live."),
    voice_cache: Optional[int] = typer.Option(None, "--voice-cache", help="Voice encodings kept in memory."),
    device: Optional[str] = typer.Option(None, "--device", help="Engine device: auto, cpu, cuda..."),
    grace: Optional[float] = typer.Option(None, "--grace", help="Seconds to drain in-flight requests on SIGTERM."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Serve on Ray Serve: one deployment per model, replicas on "
        "the cluster's GPUs/CPUs (pip install 'voxbox[ray]'; see README 'Scaling out').",
    ),
    address: Optional[str] = typer.Option(
        None, "--address",
        help="With --ray: join this cluster ('auto' or HOST:PORT); default: start a local Ray instance.",
    ),
    deploy: Optional[list[str]] = typer.Option(
        None, "--deploy",
        help="With --ray: catalog model to deploy (repeat; 'all'). Default: default, preloaded and --model models.",
    ),
    replicas: Optional[str] = typer.Option(
        None, "--replicas",
        help="With --ray: replicas per model, N or MIN-MAX (autoscaled on ongoing requests; 0-MAX scales to zero).",
    ),
    target_ongoing: Optional[float] = typer.Option(
        None, "--target-ongoing",
        help="With --ray: autoscaling target of ongoing requests per replica (default: the engine's concurrency).",
    ),
    max_ongoing: Optional[int] = typer.Option(
        None,
        "--max-ongoing",
        help="With --ray: requests a replica holds "
        "at once (default 2x the engine's concurrency); --queue-size more wait.",
    ),
    replica_gpus: Optional[float] = typer.Option(
        None, "--replica-gpus",
        help="With --ray: GPUs per model replica (fractions share a GPU; default from the hardware plan).",
    ),
    replica_cpus: Optional[float] = typer.Option(
        None, "--replica-cpus", help="With --ray: CPUs per model replica (default 1; also its engine threads)."
    ),
) -> None:
    """Serve the OpenAI audio API (speech, transcriptions, translations, models, voices)."""
    ray_flags = {"address": address, "deploy": deploy, "replicas": replicas, "target_ongoing": target_ongoing,
                 "max_ongoing": max_ongoing, "replica_gpus": replica_gpus, "replica_cpus": replica_cpus}
    if not ray and any(v is not None for v in ray_flags.values()):
        from voxbox.errors import BadInputError

        given = next(k for k, v in ray_flags.items() if v is not None)
        raise BadInputError(f"--{given.replace('_', '-')} needs --ray", param=given)
    settings = build_settings(
        host=host, port=port, model=model, tts_model=tts_model, asr_model=asr_model, preload=preload,
        no_preload=no_preload, ttl=ttl, max_loaded=max_loaded, concurrency=concurrency, queue_size=queue_size,
        timeout=timeout, max_upload_mb=max_upload_mb, api_key=api_key, allowed_host=allowed_host,
        cors_origin=cors_origin, data_dir=data_dir, voice_cache=voice_cache, device=device, grace=grace,
        log_level=log_level,
    )
    configure_logging(settings.log_level)
    if ray:
        from voxbox.ray_serve.cli import ray_options, serve_on_ray

        serve_on_ray(settings, ray_options(address=address, deploy=deploy, replicas=replicas,
                                           target_ongoing=target_ongoing, max_ongoing=max_ongoing,
                                           replica_gpus=replica_gpus, replica_cpus=replica_cpus))
        return
    import uvicorn

    from voxbox.server.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=3, lifespan="on",
                            access_log=settings.log_level.lower() == "debug")
    server = draining_server(config, grace=settings.shutdown_grace, runtime=app.state.voxbox.runtime)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    shown = f"[{shown}]" if ":" in shown else shown
    if settings.port:
        typer.echo(f"voxbox: web page at http://{shown}:{settings.port}/ (API at /v1)", err=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # handlers that kills the process (exit 143). A graceful drain is a clean exit: swallow it.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise typer.Exit(1)


def draining_server(config: Any, *, grace: float, runtime: Any) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT drains the runtime before the listener closes."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining = False
        loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining or self.loop is None:
                super().handle_exit(sig, frame)  # a second signal (or not started): stop now
                return
            self.draining = True
            runtime.draining = True
            logging.getLogger("voxbox.server").info(
                "draining: readiness fails now; waiting up to %.0f s for %d request(s)", grace, runtime.busy)
            loop = self.loop
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(sig, frame)))

        async def _drain(self, sig: int, frame: Any) -> None:
            await runtime.drain(grace)
            uvicorn.Server.handle_exit(self, sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)

    return DrainingServer(config)


def build_settings(*, host: str | None = None, port: int | None = None, model: list[str] | None = None,
                   tts_model: str | None = None, asr_model: str | None = None, preload: list[str] | None = None,
                   no_preload: bool = False, ttl: float | None = None, max_loaded: int | None = None,
                   concurrency: int | None = None, queue_size: int | None = None, timeout: float | None = None,
                   max_upload_mb: float | None = None, api_key: str | None = None,
                   allowed_host: list[str] | None = None, cors_origin: list[str] | None = None,
                   data_dir: Path | None = None, voice_cache: int | None = None, device: str | None = None,
                   grace: float | None = None, log_level: str | None = None) -> Any:
    """ServerSettings from env/.env with the given flags on top (None = not given)."""
    from voxbox.errors import BadInputError
    from voxbox.server.settings import ServerSettings

    base = ServerSettings()
    overrides: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"models": {}, "admission": {}, "voices": {}, "cors": {}}
    for key, value in (("host", host), ("port", port), ("data_dir", data_dir), ("shutdown_grace", grace),
                       ("log_level", log_level), ("api_key", api_key), ("allowed_hosts", allowed_host)):
        if value is not None:
            overrides[key] = value
    if max_upload_mb is not None:
        overrides["max_upload_bytes"] = int(max_upload_mb * 1024 * 1024)
    for key, value in (("tts", tts_model), ("asr", asr_model), ("ttl", ttl), ("device", device),
                       ("max_loaded", max_loaded)):
        if value is not None:
            nested["models"][key] = value
    if model:
        local = dict(base.models.local)
        for item in model:
            name, sep, target = item.partition("=")
            if not sep or not name or not target:
                raise BadInputError(f"--model takes NAME=ENGINE:PATH, got {item!r}", param="model")
            local[name] = target
        nested["models"]["local"] = local
    if preload:
        nested["models"]["preload"] = list(preload)
    if no_preload:
        nested["models"]["preload_defaults"] = False
    for key, value in (("max_concurrency", concurrency), ("queue_size", queue_size), ("request_timeout", timeout)):
        if value is not None:
            nested["admission"][key] = value
    if voice_cache is not None:
        nested["voices"]["cache_size"] = voice_cache
    if cors_origin:
        nested["cors"]["allow_origins"] = list(cors_origin)
    merged = base.model_dump()
    for section, values in nested.items():
        if values:
            merged[section] = {**merged[section], **values}
    merged.update(overrides)
    if base.api_key is not None and "api_key" not in overrides:
        merged["api_key"] = base.api_key
    return ServerSettings.model_validate(merged)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
