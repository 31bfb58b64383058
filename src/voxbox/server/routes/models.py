"""GET /v1/models, GET /v1/models/{id}, POST /v1/models/{id}/load, DELETE /v1/models/{id}.

Every id is a catalog name: clients never name paths, and unknown names are 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from voxbox.runtime import CatalogEntry
from voxbox.server.errors import ERROR_RESPONSES
from voxbox.server.routes.common import state_of
from voxbox.server.schemas import ModelObject, list_body
from voxbox.server.state import ServerState

__all__ = ["router"]

router = APIRouter()


def model_object(state: ServerState, entry: CatalogEntry) -> dict[str, Any]:
    rt = state.runtime
    loaded = rt.manager.get_loaded(entry.key)
    voices = None
    if loaded is not None and entry.task == "tts":
        info = loaded.engine.info
        voices = list(info.voices or ()) + sorted((info.extra or {}).get("openai_voices", {}) or {})
    gate = rt.admissions.get(entry.key)
    return ModelObject(
        id=entry.name, created=state.created, owned_by="voxbox", task=entry.task, engine=entry.engine,
        loaded=loaded is not None, voices=voices,
        memory_bytes=loaded.nbytes if loaded is not None else None,
        running=gate.running if gate is not None else 0, waiting=gate.waiting if gate is not None else 0,
    ).model_dump(exclude_none=True)


@router.get("/v1/models", responses=ERROR_RESPONSES)
async def list_models(request: Request) -> dict[str, Any]:
    """Models this server offers (its catalog)."""
    state = state_of(request)
    return list_body([model_object(state, e) for e in state.runtime.catalog.entries()])


@router.post("/v1/models/{model_id}/load", responses=ERROR_RESPONSES)
async def load_model(model_id: str, request: Request) -> dict[str, Any]:
    """Load a catalog model now (voxbox extension)."""
    state = state_of(request)
    entry = state.runtime.catalog.resolve(model_id)
    await state.runtime.manager.load(entry)
    return model_object(state, entry)


@router.get("/v1/models/{model_id}", responses=ERROR_RESPONSES)
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    """One model of the catalog."""
    state = state_of(request)
    return model_object(state, state.runtime.catalog.resolve(model_id))


@router.delete("/v1/models/{model_id}", responses=ERROR_RESPONSES)
async def unload_model(model_id: str, request: Request) -> dict[str, Any]:
    """Unload a model (once its running requests end); it stays in the catalog (voxbox extension)."""
    state = state_of(request)
    entry = state.runtime.catalog.resolve(model_id)
    deleted = state.runtime.manager.unload(entry.key)
    return {"id": entry.name, "object": "model", "deleted": deleted}
