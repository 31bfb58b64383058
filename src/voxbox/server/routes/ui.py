"""The web page (``/`` and ``/ui/...``) and the few JSON routes only it needed.

The page is plain HTML, CSS and ES modules shipped in the wheel (``voxbox/server/ui/``): no build
step, nothing from a CDN. It talks to the server through the public HTTP API only, sending the
API key from the browser's session storage, so it doubles as a live example of the API.

Static files are served without authentication (they hold no data) under a strict
Content-Security-Policy. The JSON routes added here need the key like every other ``/v1`` route:

* ``GET /v1/server`` — what this server offers, cheaply (no hardware detection): version,
  ``capabilities`` (e.g. whether the Realtime route exists), limits, default models, process
  memory, the engine catalogue with availability and install hints, and the ``VOXBOX_*`` settings
  in effect (values whose name says key/token/secret are masked).
* ``GET /v1/doctor`` — the ``voxbox doctor`` report (as ``voxbox doctor --json``) from detection
  and *cached* probe verdicts; HTTP never runs a probe. The first call detects the machine (about
  2 s; imports torch when installed), later ones reuse it for ``_DOCTOR_TTL`` seconds.
* ``GET /v1/bench/latest`` — the newest ``voxbox bench`` results per task from the configured
  results directory, and ``GET /v1/bench/chart?run=...&name=...`` for their PNG charts.
* ``GET /v1/voices/{name}/content`` — an uploaded reference clip, so the page can play it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from voxbox.errors import NotFoundError, VoiceNotFoundError
from voxbox.server.bench_results import BenchIndex
from voxbox.server.routes.common import state_of

__all__ = ["CSP", "UI_DIR", "router"]

#: Where the page's files live (inside the installed package).
UI_DIR = Path(__file__).resolve().parent.parent / "ui"

#: Same-origin only. ``blob:``/``data:`` for audio made in the page (recordings, streamed speech,
#: chart images fetched with the key). ``connect-src 'self'`` covers same-origin ``ws:``/``wss:``
#: (CSP Level 3) for the Realtime socket.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_UI_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

router = APIRouter(include_in_schema=False)
api = APIRouter()  # the guard middleware checks the API key for every /v1 path


# ------------------------------------------------------------------------------------------------
# static files
# ------------------------------------------------------------------------------------------------

def _ui_file(rel: str) -> Path:
    """The file ``rel`` under UI_DIR, or NotFoundError (never a path outside it)."""
    root = UI_DIR.resolve()
    path = (root / rel).resolve()
    if root not in path.parents or path.suffix not in _TYPES or not path.is_file():
        raise NotFoundError("not found")
    return path


def _serve(rel: str) -> FileResponse:
    path = _ui_file(rel)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_UI_HEADERS)


@router.get("/")
async def index() -> FileResponse:
    return _serve("index.html")


@router.get("/ui")
@router.get("/ui/")
async def ui_index() -> FileResponse:
    return _serve("index.html")


@router.get("/ui/{rel:path}")
async def ui_file(rel: str) -> FileResponse:
    return _serve(rel)


# ------------------------------------------------------------------------------------------------
# /v1/server and /v1/doctor
# ------------------------------------------------------------------------------------------------

_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
_DOCTOR_TTL = 30.0


def _engines(state: Any) -> list[dict[str, Any]]:
    from voxbox.engines import registry

    loaded = {m.key[0]: m for m in state.runtime.manager.loaded()}
    out = []
    for spec in registry.ENGINES.values():
        ok, reason = registry.available(spec)
        m = loaded.get(spec.name)
        info = getattr(m.engine, "info", None) if m is not None else None
        out.append({
            "name": spec.name,
            "task": spec.task,
            "description": spec.description,
            "available": ok,
            "reason": reason,
            "install_hint": spec.install_hint,
            "aliases": list(spec.aliases),
            "bundled_model": spec.default_model,
            "clones_voices": _clones(spec, info),
            "loaded": m is not None,
        })
    return out


#: Engines that take an uploaded reference voice, for when an engine is not loaded (a loaded one
#: says so itself through ``EngineInfo.supports_cloning``).
_CLONING_ENGINES = frozenset(("echo-tts", "fish-s2"))


def _clones(spec: Any, info: Any) -> bool | None:
    if spec.task != "tts":
        return None
    if info is not None:
        return bool(getattr(info, "supports_cloning", False))
    caps = getattr(spec, "capabilities", None)
    if caps is not None and hasattr(caps, "cloning"):
        return bool(caps.cloning)
    return spec.name in _CLONING_ENGINES


def _voxbox_env() -> list[dict[str, str]]:
    out = []
    for name in sorted(os.environ):
        if not name.startswith("VOXBOX_"):
            continue
        secret = any(w in name.upper() for w in _SECRET_WORDS)
        out.append({"name": name, "value": "(set, hidden)" if secret else os.environ[name]})
    return out


def _has_route(app: Any, path: str, scope_type: str = "http", method: str = "GET") -> bool:
    """Whether the app answers ``path`` (asked through the routes' own matching, so included
    routers and websocket routes count)."""
    from starlette.routing import Match

    scope = {"type": scope_type, "path": path, "method": method, "root_path": "", "headers": [],
             "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def _server_info(request: Request) -> dict[str, Any]:
    state = state_of(request)
    s = state.settings
    app = request.app
    return {
        "object": "server",
        "version": request.app.version,
        "api_key_required": s.api_key_value() is not None,
        "ready": bool(state.ready),
        "startup_error": state.startup_error,
        "capabilities": {
            "realtime": _has_route(app, "/v1/realtime", "websocket"),
            "translations": _has_route(app, "/v1/audio/translations", method="POST"),
            "metrics": _has_route(app, "/metrics"),
        },
        "defaults": {"tts": s.models.tts, "asr": s.models.asr, "device": s.models.device, "ttl": s.models.ttl},
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_audio_seconds": s.max_audio_seconds,
                   "max_clip_seconds": s.voices.max_clip_seconds, "queue_size": s.admission.queue_size,
                   "request_timeout": s.admission.request_timeout},
        "process": _process(),
        "voxbox_env": _voxbox_env(),
        "engines": _engines(state),
    }


def _process() -> dict[str, Any]:
    try:
        import psutil  # type: ignore[import-untyped]

        p = psutil.Process()
        return {"rss_bytes": p.memory_info().rss, "threads": p.num_threads()}
    except Exception:  # noqa: BLE001 - informative only
        return {}


async def _doctor_report(request: Request) -> dict[str, Any]:
    """The doctor report from detection and cached probe verdicts, kept for ``_DOCTOR_TTL`` s."""
    from voxbox.hardware.doctor import build_report

    app_state = request.app.state
    cache = getattr(app_state, "voxbox_doctor", None)
    if cache is None:
        cache = app_state.voxbox_doctor = {"lock": asyncio.Lock(), "at": 0.0, "report": None}
    async with cache["lock"]:
        if cache["report"] is None or time.monotonic() - cache["at"] > _DOCTOR_TTL:
            from voxbox.engines.registry import ENGINES

            report = await state_of(request).runtime.run(lambda: build_report(ENGINES.values(), probe=None))
            report.pop("startup", None)  # the server's own cache paths stay on the server
            cache["report"] = report
            cache["at"] = time.monotonic()
    return dict(cache["report"])


@api.get("/v1/server")
async def server(request: Request) -> dict[str, Any]:
    return _server_info(request)


@api.get("/v1/doctor")
async def doctor(request: Request) -> dict[str, Any]:
    return await _doctor_report(request)


# ------------------------------------------------------------------------------------------------
# /v1/bench
# ------------------------------------------------------------------------------------------------

def _bench_index(request: Request) -> BenchIndex:
    app_state = request.app.state
    index = getattr(app_state, "voxbox_bench", None)
    if index is None:
        configured = getattr(state_of(request).settings, "bench_dir", None)
        index = app_state.voxbox_bench = BenchIndex(Path(configured) if configured else Path.cwd() / "bench-results")
    return index


@api.get("/v1/bench/latest")
async def bench_latest(request: Request) -> dict[str, Any]:
    index = _bench_index(request)
    runs = await state_of(request).runtime.run(index.latest)
    return {"object": "list", "data": runs}


@api.get("/v1/bench/chart")
async def bench_chart(request: Request, run: str, name: str) -> Response:
    index = _bench_index(request)
    path = await state_of(request).runtime.run(index.chart, run, name)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


# ------------------------------------------------------------------------------------------------
# /v1/voices/{name}/content
# ------------------------------------------------------------------------------------------------

_MAGIC = ((b"RIFF", "audio/wav"), (b"OggS", "audio/ogg"), (b"fLaC", "audio/flac"), (b"ID3", "audio/mpeg"),
          (b"\x1a\x45\xdf\xa3", "audio/webm"))


def _sniff(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    return "application/octet-stream"


@api.get("/v1/voices/{name}/content")
async def voice_content(name: str, request: Request) -> Response:
    state = state_of(request)
    stored = state.voices.get(name)
    if stored is None:
        raise VoiceNotFoundError(f"voice {name!r} not found", param="name")
    data = await state.runtime.run(state.voices.clip_bytes, stored)
    return Response(data, media_type=_sniff(data), headers={"Cache-Control": "no-store"})


router.include_router(api)
