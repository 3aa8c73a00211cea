"""The repository extension of the Open Inference Protocol (KServe/Triton) over REST.

``POST /v2/repository/index`` lists every model of the repository with its state;
``POST /v2/repository/models/{name}/load`` loads or reloads one from disk and answers once
it serves (or failed, keeping any previous copy serving); ``.../unload`` refuses new requests
for it at once and frees it when its in-flight requests are done. These are control calls:
the middleware guards them with the admin key when one is set (see ``ApiKeyAuth``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..engine import ModelRegistry
from ..engine.registry import READY, UNAVAILABLE, UNLOADING
from ..errors import ControlConflict, InvalidInput, InvalidRequest, LoadFailed

PREFIX = "/v2/repository"


class ModelIndexEntry(BaseModel):
    name: str
    version: str = Field(description="The version this state belongs to ('' for a model never loaded).")
    state: str = Field(description="READY, UNAVAILABLE, LOADING, UNLOADING or FAILED.")
    reason: str = ""


class ControlAnswer(BaseModel):
    name: str
    state: str


def repository_index(registry: ModelRegistry, ready_only: bool = False) -> list[dict[str, Any]]:
    """Every model on disk or still held in memory, with its state; what both protocols answer."""
    entries = []
    for name in sorted(set(registry.repository.names()) | set(registry.models)):
        served = registry.models.get(name)
        if served is None:
            found = [{"name": name, "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}]
        else:
            copies = registry.versions.get(name) or {served.version: served}
            found = [{"name": name, "version": version, "state": copy.state.upper(), "reason": copy.reason or ""}
                     for version, copy in sorted(copies.items(), key=lambda item: int(item[0] or 0))]
        entries.extend(entry for entry in found if not ready_only or entry["state"] == "READY")
    return entries


def refuse_overrides(parameters: Iterable[str]) -> None:
    """Triton's load parameters (a config or files to load instead of the repository's) have no meaning
    here: refused, not ignored. ``unload_dependents`` (tritonclient sends it on every unload) is met
    whatever its value: no model here depends on another."""
    unknown = sorted(set(parameters) - {"unload_dependents"})
    if unknown:
        raise InvalidRequest(f"parameters {unknown} are not supported: a model is "
                             "loaded from its folder in the repository, as its model.toml says")


class ControlRequest(BaseModel):
    """The body of a REST load or unload: optional, as Triton's ``{"parameters": {...}}``."""

    parameters: dict[str, Any] = Field(default_factory=dict)


async def _control_request(request: Request) -> None:
    """Check a load or unload request's optional body: JSON, and no overrides (:func:`refuse_overrides`)."""
    raw = await request.body()
    if not raw.strip():
        return
    try:
        body = ControlRequest.model_validate_json(raw)
    except ValueError:
        raise InvalidInput('the body must be empty or a JSON object such as {"parameters": {}}',
                           code="invalid_request") from None
    refuse_overrides(body.parameters)


async def load_model(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """Load or reload ``name``; :class:`LoadFailed` (with the reason) when the new copy did not come up,
    :class:`ControlConflict` when an unload of the model overtook this load before it answered."""
    served = await asyncio.to_thread(registry.load, name)
    if served.state in (UNLOADING, UNAVAILABLE):
        raise ControlConflict(f"model {name!r} was unloaded by another call as this load finished; load it again "
                              "to serve it")
    if served.state != READY:
        raise LoadFailed(f"model {name!r} failed to load: {served.reason}")
    if served.reason:  # the previous copy still serves; the reload itself failed
        raise LoadFailed(f"model {name!r}: {served.reason}")
    return {"name": name, "state": served.state.upper()}


def add_repository_routes(app: FastAPI, responses: dict[int | str, Any], control: bool) -> None:
    """The index always; load and unload only when models may change (``--model-control explicit|poll``)."""
    @app.post(f"{PREFIX}/index", response_model=list[ModelIndexEntry], responses=responses,
              summary="Every model of the repository with its state (body: optional {\"ready\": true})")
    async def index(request: Request) -> JSONResponse:
        raw = await request.body()
        ready_only = False
        if raw.strip():
            try:
                body = RepositoryIndexRequest.model_validate_json(raw)
            except ValueError:
                raise InvalidInput("the index request body must be a JSON object such as {\"ready\": true}",
                                   code="invalid_request") from None
            ready_only = body.ready
        return JSONResponse(repository_index(request.app.state.serve.registry, ready_only))

    if not control:
        return

    @app.post(PREFIX + "/models/{name}/load", response_model=ControlAnswer, responses=responses,
              summary="Load a model from the repository, or reload it (the old copy serves until the new is ready)")
    async def load(request: Request, name: str) -> JSONResponse:
        await _control_request(request)
        return JSONResponse(await load_model(request.app.state.serve.registry, name))

    @app.post(PREFIX + "/models/{name}/unload", response_model=ControlAnswer, responses=responses,
              summary="Unload a model: new requests get 404 model_not_found, in-flight ones finish")
    async def unload(request: Request, name: str) -> JSONResponse:
        await _control_request(request)
        # Off the event loop: an unload waits for a load of the same model to finish.
        served = await asyncio.to_thread(request.app.state.serve.registry.unload, name)
        return JSONResponse({"name": name, "state": served.state.upper()})


class RepositoryIndexRequest(BaseModel):
    model_config = {"extra": "forbid"}

    repository_name: str = ""
    ready: bool = False
