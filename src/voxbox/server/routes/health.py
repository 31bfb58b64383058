"""GET /health (liveness), GET /health/ready (503 until default models are loaded), GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from voxbox.server.errors import NotReadyError
from voxbox.server.routes.common import state_of
from voxbox.server.state import model_label

__all__ = ["health_router", "metrics_router"]

health_router = APIRouter()
metrics_router = APIRouter()


@health_router.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@health_router.get("/health/ready")
async def ready(request: Request) -> dict[str, Any]:
    state = state_of(request)
    if state.draining:
        raise NotReadyError("the server is shutting down")
    if not state.ready:
        detail = f": {state.startup_error}" if state.startup_error else ""
        raise NotReadyError(f"default models are still loading{detail}")
    return {"status": "ready", "models": [model_label(m.key) for m in state.manager.loaded()]}


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
