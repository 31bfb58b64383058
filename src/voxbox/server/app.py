"""``create_app(settings)``: the OpenAI-compatible speech server as a FastAPI app.

::

    from voxbox.server.app import create_app
    from voxbox.server.settings import ServerSettings
    app = create_app(ServerSettings(port=9000))

The lifespan starts the model manager's idle reaper, preloads the default models (and voices) in
the background — ``/health/ready`` answers 503 until they are loaded — and on shutdown marks the
server draining and unloads everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI

from voxbox.server.errors import install_error_handlers
from voxbox.server.middleware import JsonBodyLimitMiddleware, TimingMiddleware
from voxbox.server.routes.common import require_api_key
from voxbox.server.settings import ServerSettings
from voxbox.server.state import ServerState

__all__ = ["create_app"]

log = logging.getLogger("voxbox.server")

#: Largest JSON body accepted (speech requests carry at most 4096 characters of text).
_JSON_BODY_LIMIT = 1024 * 1024


def _default_resolve(model_id: str | None, task: Any) -> tuple[str, str | None]:
    from voxbox.engines.registry import resolve_model

    return resolve_model(model_id, task)


def _default_loader(device: str) -> Callable[[str, str | None], Any]:
    def load(engine: str, model: str | None) -> Any:
        from voxbox.engines.registry import load_engine

        return load_engine(engine, model, device=device)

    return load


async def _preload(state: ServerState) -> None:
    s = state.settings
    wanted: list[tuple[str, Any]] = []
    if s.models.preload_defaults:
        wanted += [(s.models.tts, "tts"), (s.models.asr, "asr")]
    from voxbox.server.routes.models import resolve_any

    for model_id in s.models.preload:
        try:
            wanted.append((model_id, resolve_any(model_id)[1]))
        except Exception as exc:  # noqa: BLE001 - reported through /health/ready
            state.startup_error = f"{model_id}: {exc}"
            log.error("cannot preload %s: %s", model_id, exc)
            return
    try:
        for model_id, task in wanted:
            await state.manager.load(model_id, task)
        for name in s.voices.preload:
            await _preload_voice(state, name)
    except Exception as exc:  # noqa: BLE001 - reported through /health/ready
        state.startup_error = str(exc)
        log.error("preloading failed: %s", exc)
        return
    state.ready = True
    log.info("ready: %s", ", ".join(m.name for m in state.manager.loaded()) or "no models preloaded")


async def _preload_voice(state: ServerState, name: str) -> None:
    stored = state.voices.get(name)
    if stored is None:
        log.warning("voice %r listed for preload is not uploaded; skipping", name)
        return
    model = await state.manager.load(state.settings.models.tts, "tts")
    info = model.engine.info
    if not info.supports_cloning:
        log.warning("default speech model %s cannot clone; not preloading voice %r", model.name, name)
        return
    engine = model.engine

    def encode(clip: bytes, transcript: str | None) -> Any:
        from voxbox.audio.decode import decode

        return engine.encode_voice(decode(clip, max_duration=state.settings.voices.max_clip_seconds), transcript)

    await state.run(state.voices.encoding, stored, info.name, str(info.model), encode)


def create_app(
    settings: ServerSettings | None = None,
    *,
    loader: Callable[[str, str | None], Any] | None = None,
) -> FastAPI:
    """Build the app. ``loader(engine, model) -> engine`` defaults to the engine registry."""
    settings = settings or ServerSettings()
    state = ServerState(settings, resolve=_default_resolve, loader=loader or _default_loader(settings.models.device))
    state.created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.manager.start()
        preload = asyncio.get_running_loop().create_task(_preload(state))
        try:
            yield
        finally:
            state.draining = True
            preload.cancel()
            try:
                await preload
            except BaseException:  # noqa: BLE001 - cancelled or failed; shutting down either way
                pass
            await state.close()

    app = FastAPI(
        title="voxbox",
        description="OpenAI-compatible local speech server (TTS and ASR).",
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.voxbox = state
    install_error_handlers(app)
    app.add_middleware(JsonBodyLimitMiddleware, limit=_JSON_BODY_LIMIT)
    app.add_middleware(TimingMiddleware, metrics=state.metrics)

    from voxbox.server.routes import health, models, speech, transcriptions, ui, voices

    auth = [Depends(require_api_key)]
    app.include_router(health.health_router)
    app.include_router(health.metrics_router, dependencies=auth)
    app.include_router(speech.router, dependencies=auth)
    app.include_router(transcriptions.router, dependencies=auth)
    app.include_router(models.router, dependencies=auth)
    app.include_router(voices.router, dependencies=auth)
    app.include_router(ui.router)  # the web page (static, no auth) and its /v1 routes (auth inside)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("voxbox")
    except Exception:  # noqa: BLE001
        return "0"
