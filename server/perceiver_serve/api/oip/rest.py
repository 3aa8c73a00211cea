"""The Open Inference Protocol over HTTP: ``/v2/...`` routes on the REST port.

The body of an inference request is JSON, optionally followed by binary tensor data (the
binary tensor data extension): ``Inference-Header-Content-Length`` says where the JSON ends,
and each binary input states its ``binary_data_size``. Every size a client states is checked
against the body before anything is decoded. Any Content-Type is accepted, as tritonclient
sends none. Errors are ``{"error": "<message>"}`` with a 4xx status (see :mod:`..errors`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import InvalidInput, InvalidRequest
from ...tasks.definition import describe
from ..disconnect import until_disconnect
from ..state import ServerState
from . import infer as v2
from .tensors import Tensor, from_json, from_raw, to_json_data, to_raw

PREFIX = "/v2"
HEADER_LENGTH = "inference-header-content-length"
OPEN_PATHS = frozenset({f"{PREFIX}/health/live", f"{PREFIX}/health/ready"})


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # fields of newer protocol revisions pass


class InputBody(_Lenient):
    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class OutputBody(_Lenient):
    name: str = Field(max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferBody(_Lenient):
    id: str = Field("", max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputBody] = Field(max_length=64)
    outputs: list[OutputBody] | None = Field(None, max_length=64)


def _flag(parameters: dict[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"parameter {name!r} must be true or false")
    return value


def _split(request: Request, raw: bytes) -> tuple[bytes, memoryview]:
    """The JSON header and the binary data after it."""
    declared = request.headers.get(HEADER_LENGTH)
    if declared is None:
        return raw, memoryview(b"")
    if not declared.strip().isdigit():
        raise InvalidInput(f"Inference-Header-Content-Length is {declared[:20]!r}, not a number of bytes",
                           code="bad_header_length")
    if int(declared) > len(raw):
        raise InvalidInput(f"Inference-Header-Content-Length is {declared[:20]!r}, but the body has {len(raw)} bytes",
                           code="bad_header_length")
    length = int(declared)
    return raw[:length], memoryview(raw)[length:]


def _parse_body(header: bytes) -> InferBody:
    try:
        return InferBody.model_validate_json(header)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidInput("the inference request is not valid JSON", code="malformed_json") from None
        raise InvalidRequest(describe(exc)) from None


def _tensors(body: InferBody, binary: memoryview) -> list[Tensor]:
    tensors, offset = [], 0
    for item in body.inputs:
        size = item.parameters.get("binary_data_size")
        if size is None:
            if item.data is None:
                raise InvalidInput(f"input {item.name!r} has neither data nor binary_data_size", code="no_data")
            tensors.append(from_json(item.name, item.datatype, item.shape, item.data, v2.MAX_ELEMENTS))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input {item.name!r}: binary_data_size must be a non-negative integer",
                               code="bad_binary_size")
        if item.data is not None:
            raise InvalidInput(f"input {item.name!r} has both data and binary_data_size", code="bad_binary_size")
        if size > len(binary) - offset:
            raise InvalidInput(f"input {item.name!r}: binary_data_size {size} runs past the body's "
                               f"{len(binary) - offset} remaining binary bytes", code="bad_binary_size")
        tensors.append(from_raw(item.name, item.datatype, item.shape, binary[offset:offset + size], v2.MAX_ELEMENTS))
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data after the inputs' binary_data_size",
                           code="bad_binary_size")
    return tensors


def _answer(answer: v2.InferAnswer, body: InferBody) -> Response:
    default = _flag(body.parameters, "binary_data_output")
    as_binary = {o.name: _flag(o.parameters, "binary_data", default) for o in body.outputs or ()}
    outputs, blobs = [], []
    for tensor in answer.outputs:
        out: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if as_binary.get(tensor.name, default):
            blob = to_raw(tensor)
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = to_json_data(tensor)
        outputs.append(out)
    document = {"model_name": answer.model, "model_version": answer.version, "outputs": outputs}
    if answer.id:
        document["id"] = answer.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(b"".join([header, *blobs]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def install_v2(app: FastAPI) -> None:
    """Add the ``/v2`` routes (left out of /openapi.json: the protocol has its own specification)."""

    def state(request: Request) -> ServerState:
        return request.app.state.serve

    def route(path: str, **options: Any):
        return app.api_route(PREFIX + path, include_in_schema=False, **options)

    @route("", methods=["GET"])
    async def server_metadata() -> JSONResponse:
        return JSONResponse(v2.server_metadata())

    @route("/health/live", methods=["GET", "HEAD"])
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @route("/health/ready", methods=["GET", "HEAD"])
    async def ready(request: Request) -> JSONResponse:
        is_ready = v2.server_ready(state(request))
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def model_metadata(request: Request, model: str, version: str = "") -> JSONResponse:
        served = v2.find_model(state(request).registry, model, version)
        request.scope["state"]["model"] = served.name
        return JSONResponse(v2.model_metadata(state(request).registry, served))

    async def model_config(request: Request, model: str, version: str = "") -> JSONResponse:
        served = v2.find_model(state(request).registry, model, version)
        request.scope["state"]["model"] = served.name
        return JSONResponse(v2.model_config(served))

    async def model_ready(request: Request, model: str, version: str = "") -> JSONResponse:
        is_ready = v2.model_ready(state(request), model, version)
        request.scope["state"]["model"] = model
        return JSONResponse({"name": model, "ready": is_ready}, status_code=200 if is_ready else 503)

    async def model_infer(request: Request, model: str, version: str = "") -> Response:
        header, binary = _split(request, await request.body())
        body = _parse_body(header)
        for item in body.inputs:
            v2.refuse_unsupported("input", item.name, item.parameters)
        for output in body.outputs or ():
            v2.refuse_unsupported("output", output.name, output.parameters)
        names = [o.name for o in body.outputs] if body.outputs else None  # none, or []: the default outputs
        call = v2.InferRequest(model, version, _tensors(body, binary), body.parameters, names, body.id)
        request.scope["state"]["model"] = model
        answer = await until_disconnect(request, v2.infer(state(request), call))  # a client gone: its work dropped
        return _answer(answer, body)

    async def model_statistics(request: Request, model: str = "", version: str = "") -> JSONResponse:
        request.scope["state"]["model"] = model
        return JSONResponse(v2.model_statistics(state(request).registry, model, version))

    route("/models/stats", methods=["GET"])(model_statistics)  # before /models/{model}, which it would match
    for base in ("/models/{model}", "/models/{model}/versions/{version}"):
        route(base, methods=["GET"])(model_metadata)
        route(base + "/ready", methods=["GET"])(model_ready)
        route(base + "/config", methods=["GET"])(model_config)
        route(base + "/stats", methods=["GET"])(model_statistics)
        route(base + "/infer", methods=["POST"])(model_infer)
