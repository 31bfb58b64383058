"""GET/HEAD /health (liveness), /health/ready (503 until ready, and while draining), GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from voxbox.server.errors import ERROR_RESPONSES, NotReadyError
from voxbox.server.routes.common import state_of
from voxbox.server.schemas import METRICS_RESPONSE

__all__ = ["health_router", "metrics_router"]

health_router = APIRouter()
metrics_router = APIRouter()


@health_router.head("/health", include_in_schema=False)
@health_router.get("/health", responses=ERROR_RESPONSES)
async def health() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health_router.head("/health/ready", include_in_schema=False)
@health_router.get("/health/ready", responses=ERROR_RESPONSES)
async def ready(request: Request) -> dict[str, Any]:
    """Readiness: default models loaded and not draining (503 otherwise)."""
    state = state_of(request)
    if state.draining:
        raise NotReadyError("the server is shutting down")
    if not state.ready:
        detail = f": {state.startup_error}" if state.startup_error else ""
        raise NotReadyError(f"default models are still loading{detail}")
    return {"status": "ready", "models": [m.name for m in state.runtime.manager.loaded()]}


@metrics_router.get("/metrics", responses={**METRICS_RESPONSE, **ERROR_RESPONSES}, response_class=Response,
                    status_code=200)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
