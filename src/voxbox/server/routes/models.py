"""GET /v1/models, GET /v1/models/{id}, POST /v1/models/{id}/load, DELETE /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from voxbox.engines import registry
from voxbox.errors import ModelNotFoundError, VoxboxError
from voxbox.runtime.models import Key
from voxbox.server.routes.common import state_of
from voxbox.server.schemas import ModelObject, list_body
from voxbox.server.state import ServerState, model_label

__all__ = ["router"]

router = APIRouter()


def resolve_any(model_id: str) -> tuple[Key, str]:
    """A model id of either task -> ((engine, model), task). ModelNotFoundError (404) otherwise."""
    for task in ("tts", "asr"):
        try:
            return registry.resolve_model(model_id, task), task  # type: ignore[arg-type]
        except ModelNotFoundError:
            continue
    raise ModelNotFoundError(f"unknown model {model_id!r}", param="model")


def _object(state: ServerState, model_id: str, key: Key, task: str) -> dict[str, Any]:
    loaded = state.manager.get_loaded(key)
    voices = None
    if loaded is not None and task == "tts":
        voices = list(getattr(loaded.engine.info, "voices", ()) or ())
    return ModelObject(
        id=model_id, created=state.created, owned_by="voxbox", task=task,  # type: ignore[arg-type]
        engine=key[0], loaded=loaded is not None, voices=voices,
    ).model_dump(exclude_none=True)


def known_models(state: ServerState) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for spec in registry.ENGINES.values():
        if spec.default_model is None or not registry.available(spec)[0]:
            continue
        for alias in spec.aliases:
            out[alias] = _object(state, alias, (spec.name, None), spec.task)
    for m in state.manager.loaded():
        label = model_label(m.key)
        out.setdefault(label, _object(state, label, m.key, m.task))
    return list(out.values())


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return list_body(known_models(state_of(request)))


@router.post("/v1/models/{model_id:path}/load")
async def load_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    key, task = resolve_any(model_id)
    await state.manager.load(model_id, task)  # type: ignore[arg-type]
    return _object(state, model_id, key, task)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    key, task = resolve_any(model_id)
    spec = registry.get_spec(key[0])
    ok, reason = registry.available(spec)
    if not ok and state.manager.get_loaded(key) is None:
        raise ModelNotFoundError(f"model {model_id!r} is not usable here: {reason}", param="model")
    return _object(state, model_id, key, task)


@router.delete("/v1/models/{model_id:path}")
async def unload_model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    key, _task = resolve_any(model_id)
    try:
        deleted = state.manager.unload(key)
    except VoxboxError:
        raise
    if deleted:
        state.drop_admission(key)
    return {"id": model_id, "object": "model", "deleted": deleted}
