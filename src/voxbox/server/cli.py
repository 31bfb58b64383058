"""``voxbox serve``: run the OpenAI-compatible server with uvicorn.

Flags override ``VOXBOX_*`` environment variables and ``.env``; unset flags leave them alone.
SIGTERM (or Ctrl-C) stops accepting connections, lets in-flight requests finish for up to
``--grace`` seconds, cancels what is left, unloads the models and exits 0.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Optional

import typer

__all__ = ["build_settings", "register", "serve"]


def serve(
    host: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1; VOXBOX_HOST)."),
    port: Optional[int] = typer.Option(None, help="Port (default 8000; VOXBOX_PORT)."),
    tts_model: Optional[str] = typer.Option(None, "--tts-model", help="Default speech model (tts-1 = hibari)."),
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="Default transcription model (whisper-1)."),
    preload: Optional[list[str]] = typer.Option(None, "--preload", help="Extra model to load at start-up (repeat)."),
    no_preload: bool = typer.Option(False, "--no-preload", help="Do not load the default models at start-up."),
    ttl: Optional[float] = typer.Option(None, "--ttl", help="Idle seconds before a model is unloaded; -1 never."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency",
                                              help="Requests run at once per model (default: the engine's)."),
    queue_size: Optional[int] = typer.Option(None, "--queue-size", help="Requests that may wait per model."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Request timeout in seconds (504 beyond)."),
    max_upload_mb: Optional[float] = typer.Option(None, "--max-upload-mb", help="Largest upload in MB (default 25)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar=None,
                                          help="Require 'Authorization: Bearer KEY' (prefer VOXBOX_API_KEY)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where uploaded voices and encodings live."),
    voice_cache: Optional[int] = typer.Option(None, "--voice-cache", help="Voice encodings kept in memory."),
    device: Optional[str] = typer.Option(None, "--device", help="Engine device: auto, cpu, cuda..."),
    grace: Optional[float] = typer.Option(None, "--grace", help="Seconds to drain in-flight requests on SIGTERM."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve the OpenAI audio API (speech, transcriptions, translations, models, voices)."""
    import uvicorn

    from voxbox.server.app import create_app

    settings = build_settings(
        host=host, port=port, tts_model=tts_model, asr_model=asr_model, preload=preload, no_preload=no_preload,
        ttl=ttl, concurrency=concurrency, queue_size=queue_size, timeout=timeout, max_upload_mb=max_upload_mb,
        api_key=api_key, data_dir=data_dir, voice_cache=voice_cache, device=device, grace=grace, log_level=log_level,
    )

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_grace,
        lifespan="on",
        access_log=settings.log_level.lower() == "debug",
    )
    server = uvicorn.Server(config)
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


def build_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    tts_model: str | None = None,
    asr_model: str | None = None,
    preload: list[str] | None = None,
    no_preload: bool = False,
    ttl: float | None = None,
    concurrency: int | None = None,
    queue_size: int | None = None,
    timeout: float | None = None,
    max_upload_mb: float | None = None,
    api_key: str | None = None,
    data_dir: Path | None = None,
    voice_cache: int | None = None,
    device: str | None = None,
    grace: float | None = None,
    log_level: str | None = None,
) -> Any:
    """ServerSettings from env/.env with the given flags on top (None = not given)."""
    from voxbox.server.settings import ServerSettings

    overrides: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"models": {}, "admission": {}, "voices": {}}
    for key, value in (("host", host), ("port", port), ("data_dir", data_dir), ("shutdown_grace", grace),
                       ("log_level", log_level), ("api_key", api_key)):
        if value is not None:
            overrides[key] = value
    if max_upload_mb is not None:
        overrides["max_upload_bytes"] = int(max_upload_mb * 1024 * 1024)
    for key, value in (("tts", tts_model), ("asr", asr_model), ("ttl", ttl), ("device", device)):
        if value is not None:
            nested["models"][key] = value
    if preload:
        nested["models"]["preload"] = list(preload)
    if no_preload:
        nested["models"]["preload_defaults"] = False
    for key, value in (("max_concurrency", concurrency), ("queue_size", queue_size), ("request_timeout", timeout)):
        if value is not None:
            nested["admission"][key] = value
    if voice_cache is not None:
        nested["voices"]["cache_size"] = voice_cache
    overrides.update({k: v for k, v in nested.items() if v})
    return ServerSettings(**overrides)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
