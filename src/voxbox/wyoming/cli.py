"""``voxbox wyoming``: a Wyoming server (Home Assistant's voice protocol) for ASR and TTS.

::

    voxbox wyoming --uri tcp://0.0.0.0:10300        # then add "Wyoming Protocol" in Home Assistant

It runs the same catalog, runtime and ``VOXBOX_*`` settings as ``voxbox serve`` (the default
models are loaded before the port opens). ``--zeroconf`` announces the server over mDNS so Home
Assistant discovers it (needs ``pip install zeroconf``; off by default).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, List, Optional

import typer

__all__ = ["register", "run", "wyoming"]

log = logging.getLogger("voxbox.wyoming")


async def run(settings: Any, uri: str, *, zeroconf: str | None = None, ready: Any = None) -> None:
    """Serve Wyoming on ``uri`` until cancelled. ``ready`` (an asyncio.Event) is set once listening."""
    from wyoming.server import AsyncServer

    from voxbox.server.app import build_runtime
    from voxbox.wyoming.handler import VoxboxHandler
    from voxbox.wyoming.info import WyomingFront

    runtime = build_runtime(settings)
    runtime.start()
    try:
        wanted = [settings.models.asr, settings.models.tts] if settings.models.preload_defaults else []
        for name in wanted + list(settings.models.preload):
            await runtime.load(name)
        front = WyomingFront(runtime, settings)
        server = AsyncServer.from_uri(uri)
        if zeroconf is not None:
            await _announce(uri, zeroconf)
        log.info("wyoming: listening on %s", uri)
        await server.start(partial(VoxboxHandler, front))
        if ready is not None:
            ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
    finally:
        await runtime.close()


async def _announce(uri: str, name: str) -> None:
    from voxbox.errors import EngineUnavailableError

    if not uri.startswith("tcp://"):
        raise EngineUnavailableError("zeroconf announces TCP servers only (use --uri tcp://HOST:PORT)")
    try:
        from wyoming.zeroconf import HomeAssistantZeroconf
    except ImportError:
        raise EngineUnavailableError("zeroconf discovery needs the zeroconf package",
                                     install_hint="pip install zeroconf") from None
    host, _, port = uri[len("tcp://"):].rpartition(":")
    announce_host = None if host in ("0.0.0.0", "", "::") else host
    await HomeAssistantZeroconf(port=int(port), name=name or None, host=announce_host).register_server()


def wyoming(
    uri: str = typer.Option("tcp://127.0.0.1:10300", "--uri", help="tcp://HOST:PORT, unix://PATH or stdio://."),
    zeroconf: bool = typer.Option(False, "--zeroconf/--no-zeroconf", help="Announce over mDNS for Home Assistant."),
    zeroconf_name: str = typer.Option("voxbox", "--zeroconf-name", help="Name announced with --zeroconf."),
    model: Optional[List[str]] = typer.Option(None, "--model",
                                              help="Add a local model to the catalog: NAME=ENGINE:PATH (repeat)."),
    tts_model: Optional[str] = typer.Option(None, "--tts-model", help="Default speech model name (tts-1 = hibari)."),
    asr_model: Optional[str] = typer.Option(None, "--asr-model", help="Default transcription model name (whisper-1)."),
    device: Optional[str] = typer.Option(None, "--device", help="Engine device: auto, cpu, cuda..."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve ASR and TTS over the Wyoming protocol (Home Assistant)."""
    from voxbox.server.cli import build_settings, configure_logging
    from voxbox.wyoming.info import check_uri

    check_uri(uri)
    _require_wyoming()
    settings = build_settings(model=model, tts_model=tts_model, asr_model=asr_model, device=device,
                              log_level=log_level)
    configure_logging(settings.log_level)
    typer.echo(f"voxbox: Wyoming server on {uri}", err=True)
    try:
        asyncio.run(run(settings, uri, zeroconf=zeroconf_name if zeroconf else None))
    except KeyboardInterrupt:
        pass


def _require_wyoming() -> None:
    import importlib.util

    from voxbox.errors import EngineUnavailableError

    if importlib.util.find_spec("wyoming") is None:
        raise EngineUnavailableError("the Wyoming server needs the wyoming package",
                                     install_hint="pip install 'voxbox[live]'")


def register(app: typer.Typer) -> None:
    app.command()(wyoming)
