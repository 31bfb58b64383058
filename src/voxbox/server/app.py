"""``create_app(settings)``: the OpenAI-compatible speech server as a FastAPI app over a Runtime.

::

    from voxbox.server.app import create_app
    from voxbox.server.settings import ServerSettings
    app = create_app(ServerSettings(port=9000))

The app holds a :class:`voxbox.runtime.Runtime` (catalog, model manager, admission, workers); the
lifespan starts its idle reaper and preloads the default models (and voices) in the background —
``/health/ready`` answers 503 until they are loaded — and on shutdown drains and unloads. The
server itself only does HTTP: the guard (Host, CORS, API key, body limits), parsing, formats, SSE
framing and headers.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse

from voxbox.runtime import Catalog, CatalogEntry, Runtime, RuntimeConfig
from voxbox.runtime.voices import VoiceStore
from voxbox.server.errors import install_error_handlers
from voxbox.server.guard import GuardMiddleware
from voxbox.server.metrics import BatchingCollector, Metrics, MetricsObserver
from voxbox.server.middleware import TimingMiddleware
from voxbox.server.settings import ServerSettings
from voxbox.server.state import ServerState

__all__ = ["build_runtime", "create_app"]

log = logging.getLogger("voxbox.server")


def build_runtime(settings: ServerSettings, *, loader: Callable[[CatalogEntry], Any] | None = None,
                  observer: Any = None, catalog: Catalog | None = None) -> Runtime:
    """The Runtime a server (or a Ray ingress) runs: catalog and limits from the settings (the Ray
    ingress passes its own ``catalog``: the deployed models)."""
    if catalog is None:
        catalog = Catalog.default(settings.models.local, models_dir=settings.models.dir)
    budget = settings.models.memory_budget_gb
    config = RuntimeConfig(
        device=settings.models.device, ttl=settings.models.ttl, max_loaded=settings.models.max_loaded,
        memory_budget=int(budget * 2**30) if budget is not None else None,
        max_concurrency=settings.admission.max_concurrency, queue_size=settings.admission.queue_size,
        request_timeout=settings.admission.request_timeout, workers=settings.admission.workers,
        hide_load_errors=True,
        batching=settings.admission.batching, batch_max=settings.admission.batch_max,
        batch_window_ms=settings.admission.batch_window_ms,
    )
    voices = VoiceStore(settings.data_dir, cache_size=settings.voices.cache_size)
    return Runtime(catalog, config, loader=loader, voices=voices, observer=observer)


async def _preload(state: ServerState) -> None:
    s = state.settings
    rt = state.runtime
    wanted: list[str] = []
    if s.models.preload_defaults:
        wanted += [s.models.tts, s.models.asr]
    wanted += list(s.models.preload)
    for name in wanted:
        try:
            await rt.load(name)
        except Exception as exc:  # noqa: BLE001 - reported through /health/ready without internals
            state.startup_error = f"preloading model {name!r} failed (see the server log)"
            log.error("preloading %s failed: %s", name, exc)
            return
    for voice in s.voices.preload:
        try:
            await _preload_voice(state, voice)
        except Exception as exc:  # noqa: BLE001
            state.startup_error = f"preloading voice {voice!r} failed (see the server log)"
            log.error("preloading voice %s failed: %s", voice, exc)
            return
    state.ready = True
    log.info("ready: %s", ", ".join(m.name for m in rt.manager.loaded()) or "no models preloaded")


async def _preload_voice(state: ServerState, name: str) -> None:
    from voxbox.audio.decode import decode

    if state.voices.get(name) is None:
        log.warning("voice %r listed for preload is not uploaded; skipping", name)
        return
    rt = state.runtime
    max_clip = state.settings.voices.max_clip_seconds
    async with rt.acquire(state.settings.models.tts, "tts") as work:
        if not work.engine.info.supports_cloning:
            log.warning("default speech model %s cannot clone; not preloading voice %r", work.label, name)
            return
        await rt.voice_for(work, name, lambda clip: decode(clip, max_duration=max_clip))


def create_app(settings: ServerSettings | None = None, *,
               loader: Callable[[CatalogEntry], Any] | None = None, catalog: Catalog | None = None) -> FastAPI:
    """Build the app. ``loader(entry) -> engine`` defaults to the engine's spec factory; ``catalog``
    to the settings' (bundled, models dir, ``models.local``)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    runtime = build_runtime(settings, loader=loader, observer=MetricsObserver(metrics), catalog=catalog)
    for name in [settings.models.tts, settings.models.asr, *settings.models.preload]:
        if name not in runtime.catalog and (settings.models.preload_defaults or name in settings.models.preload):
            log.warning("model %r named in the settings is not in the catalog", name)
    metrics.registry.register(BatchingCollector(lambda: list(runtime.schedulers.values())))
    state = ServerState(settings, runtime, metrics)
    docs = settings.docs and settings.api_key_value() is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        preload = asyncio.get_running_loop().create_task(_preload(state))
        try:
            yield
        finally:
            preload.cancel()
            try:
                await preload
            except BaseException:  # noqa: BLE001 - cancelled or failed; shutting down either way
                pass
            await runtime.close()

    app = FastAPI(
        title="voxbox",
        description="OpenAI-compatible local speech server (TTS and ASR).",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.voxbox = state
    install_error_handlers(app)
    # add_middleware puts the last one outermost: timing sees every request, the guard's refusals too.
    app.add_middleware(
        GuardMiddleware, allowed_hosts=settings.host_allowlist(), allow_origins=settings.cors.allow_origins,
        api_key=settings.api_key_value(), max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_bytes)
    app.add_middleware(TimingMiddleware, metrics=metrics)

    from voxbox.realtime.route import router as realtime_router
    from voxbox.server.routes import health, models, speech, transcriptions, ui, vad, voices

    app.include_router(health.health_router)
    app.include_router(health.metrics_router)
    app.include_router(speech.router)
    app.include_router(transcriptions.router)
    app.include_router(models.router)
    app.include_router(voices.router)
    app.include_router(vad.router)  # POST /v1/audio/speech/timestamps
    if settings.realtime.enabled:
        app.include_router(realtime_router)  # WebSocket /v1/realtime (OpenAI Realtime transcription)
    app.include_router(ui.router)  # the web page (static, public) and its /v1 routes
    if docs:
        _mount_docs(app)
    _strip_422(app)
    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI from the ``swagger-ui-bundle`` wheel's files (no CDN); off with an API key set."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return
    from starlette.staticfiles import StaticFiles

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="voxbox API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def _strip_422(app: FastAPI) -> None:
    """Request validation errors are answered 400 (OpenAI's status): say so in /openapi.json."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        for path in schema.get("paths", {}).values():
            for op in path.values():
                if isinstance(op, dict):
                    op.get("responses", {}).pop("422", None)
        comps = schema.get("components", {}).get("schemas", {})
        comps.pop("HTTPValidationError", None)
        comps.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("voxbox")
    except Exception:  # noqa: BLE001
        return "0"
