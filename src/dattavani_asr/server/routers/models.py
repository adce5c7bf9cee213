"""`GET /v1/models` and `GET /v1/models/{id}`: what can be asked for, and what is loaded now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..errors import APIError
from ..model_manager import OPENAI_ALIASES
from ..state import ServerState, authorized, get_state

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(authorized)])


def _describe(state: ServerState, model_id: str) -> dict[str, Any]:
    loaded = state.models.loaded()
    target = state.models.canonical(model_id)
    entry = loaded.get(target)
    return {
        "id": model_id,
        "object": "model",
        "created": int(entry.loaded_at) if entry else 0,
        "owned_by": "dattavani-asr",
        "loaded": entry is not None,
        "serves": target,
    }


@router.get("", summary="Models this server offers")
async def list_models(request: Request) -> dict[str, Any]:
    state = get_state(request)
    names = [*OPENAI_ALIASES, *state.models.available()]
    return {"object": "list", "data": [_describe(state, name) for name in names]}


@router.get("/{model_id:path}", summary="One model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = get_state(request)
    if model_id not in OPENAI_ALIASES and model_id not in state.models.available():
        raise APIError(404, f"model {model_id!r} not found", code="model_not_found", param="model")
    return _describe(state, model_id)
