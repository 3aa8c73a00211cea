"""The REST front end: a thin FastAPI layer over the tasks.

Handlers parse and validate the request, resolve the model, call the task and shape the
answer; they never run model code (the tasks hand that to device workers) and every failure
is a :class:`ServeError` rendered as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import FormData, UploadFile

from ..answers import ClassificationResponse, ErrorResponse, FillMaskResponse, ModelInfo, ModelList
from ..engine import ModelRegistry
from ..errors import ClientDisconnected, InvalidInput, InvalidRequest, ServeError, UnsupportedMediaType
from ..media.budget import DecodeBudget
from ..media.flow_formats import FLOW_FORMATS, to_json
from ..media.limits import DEFAULT_DECODE_BYTES, MediaLimits
from ..metrics import EXPOSITION_CONTENT_TYPE, Metrics
from ..tasks.flow import estimate_flow
from ..tasks.image import classify_image
from ..tasks.text import classify_texts, fill_mask
from .docs import DOC_PATHS, install_docs
from .common import MAX_TEXTS, MAX_TOP_K, check_top_k, classification_json, fill_mask_json, models_json
from .errors import install_error_handlers
from .middleware import ApiKeyAuth, BodyLimit, RequestContext

T = TypeVar("T")

OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", *DOC_PATHS})


@dataclasses.dataclass
class ServerState:
    registry: ModelRegistry
    metrics: Metrics
    limits: MediaLimits
    budget: DecodeBudget = dataclasses.field(default_factory=lambda: DecodeBudget(DEFAULT_DECODE_BYTES))
    draining: bool = False


# -- request and response bodies ----------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many best labels to return.")]

FlowFormatName = Literal[tuple(FLOW_FORMATS)]  # type: ignore[valid-type]

# Query parameters of the multipart and JSON routes: documented here, each overridden by the
# form field or JSON key of the same name when the request carries one.
ModelQuery = Annotated[str | None, Query(description="Model name; default: the repository's model for the task.")]
TopKQuery = Annotated[int | None, Query(ge=1, le=MAX_TOP_K, description="How many best answers to return (default 5).")]


class ClassifyTextRequest(_Strict):
    text: str | None = Field(None, description="One text (UTF-8).")
    texts: list[str] | None = Field(None, min_length=1, max_length=MAX_TEXTS, description="Several texts.")
    model: str | None = Field(None, description="Model name; default: the repository's text classifier.")
    top_k: TopK = 5
    return_logits: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> "ClassifyTextRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' and 'texts'")
        return self


class FillMaskRequest(_Strict):
    text: str = Field(description="Text to complete; '[MASK]' marks one byte to predict.")
    mask_spans: list[tuple[int, int]] | None = Field(
        None, max_length=4096, description="[start, end) UTF-8 byte ranges to mask and predict.")
    model: str | None = None
    top_k: TopK = 5
    truncate: bool = Field(False, description="Cut texts longer than the model's limit instead of refusing.")


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)}


# -- helpers --------------------------------------------------------------------------------------

def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise InvalidInput("request body is not valid JSON", code="malformed_json") from None
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:10])
        raise InvalidRequest(detail) from None


def _body_over_query(body: BaseModel, **query: Any) -> dict[str, Any]:
    """Each named field from the JSON body where it sets it, else from the query, else the body's default."""
    return {name: getattr(body, name) if name in body.model_fields_set or value is None else value
            for name, value in query.items()}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, abandoning it (and dropping its queued items) if the client disconnects.

    The abandoned request ends as :class:`ClientDisconnected` (499, never sent), so logs and
    metrics count a client's choice, not a 500.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            raise ClientDisconnected("the client disconnected before its answer was ready")
        return task.result()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def _resolve(request: Request, task: str, name: str | None):
    served = request.app.state.serve.registry.resolve(task, name)
    request.scope["state"]["model"] = served.name
    return served


async def _upload(form: FormData, field: str) -> bytes:
    value = form.get(field)
    if value is None:
        raise InvalidInput(f"multipart field {field!r} is missing", code="missing_field")
    if isinstance(value, UploadFile):
        return await value.read()
    raise InvalidRequest(f"multipart field {field!r} must be a file upload")


def _form_params(form: FormData, query: dict[str, Any], **fields: type) -> dict[str, Any]:
    """Optional scalar parameters from form fields, falling back to the (validated) query parameters."""
    out = {name: value for name, value in query.items() if value is not None}
    for name, kind in fields.items():
        value = form.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"field {name!r} must be a plain value, not a file")
        try:
            out[name] = _coerce(value, kind)
        except ValueError:
            raise InvalidRequest(f"field {name!r} must be {kind.__name__}, got {value[:40]!r}") from None
    return out


def _coerce(value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(value)
    return kind(value)


async def _form(request: Request) -> FormData:
    if _media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(f"expected multipart/form-data, got {_media_type(request) or 'no content type'}")
    try:
        return await request.form(max_files=4, max_fields=16)
    except ServeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types
        raise InvalidInput(f"malformed multipart body: {exc}", code="malformed_multipart") from None


# -- the app --------------------------------------------------------------------------------------

def create_app(state: ServerState, *, api_key: str | None = None, max_body_bytes: int = 64 << 20,
               docs: bool = True) -> FastAPI:
    app = FastAPI(
        title="perceiver-serve",
        version="0.1.0",
        description="Perceiver IO inference: text, images, optical flow. Errors are "
                    "`{\"error\": {\"code\", \"message\"}}` with a 4xx status; a 5xx is a bug.",
        docs_url=None,  # these three are served by install_docs
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.serve = state
    install_error_handlers(app)
    if docs:
        install_docs(app)

    text_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyTextRequest"}},
        "text/plain": {"schema": {"type": "string"}},
    }}}

    @app.post("/classify/text", response_model=ClassificationResponse, responses=ERRORS, openapi_extra=text_body,
              summary="Classify one or more texts (JSON, or a text/plain body)")
    async def classify_text(request: Request, model: str | None = Query(None), top_k: int = Query(5),
                            return_logits: bool = Query(False)) -> JSONResponse:
        raw = await request.body()
        kind = _media_type(request)
        if kind == "application/json":
            body = _parse(ClassifyTextRequest, raw)
            texts = [body.text] if body.text is not None else body.texts
            model, top_k, return_logits = body.model, body.top_k, body.return_logits
        elif kind == "text/plain":
            try:
                texts = [raw.decode("utf-8")]
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                   code="invalid_utf8") from None
            check_top_k(top_k)
        else:
            raise UnsupportedMediaType(f"send application/json or text/plain, not {kind or 'no content type'}")
        served = _resolve(request, "text-classification", model)
        results = await until_disconnect(request, classify_texts(served, texts, top=top_k,
                                                                 return_logits=return_logits))
        return JSONResponse({"model": served.name, "results": [classification_json(r) for r in results]})

    mask_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/FillMaskRequest"}}}}}

    @app.post("/fill-mask", response_model=FillMaskResponse, responses=ERRORS, openapi_extra=mask_body,
              summary="Predict masked bytes of a text")
    async def fill_mask_route(request: Request, model: ModelQuery = None, top_k: TopKQuery = None,
                              truncate: Annotated[bool | None, Query(description="Cut long texts (default false).")]
                              = None) -> JSONResponse:
        if _media_type(request) != "application/json":
            raise UnsupportedMediaType(f"send application/json, not {_media_type(request) or 'no content type'}")
        body = _parse(FillMaskRequest, await request.body())
        params = _body_over_query(body, model=model, top_k=top_k, truncate=truncate)
        served = _resolve(request, "fill-mask", params["model"])
        result = await until_disconnect(request, fill_mask(served, body.text, body.mask_spans, top=params["top_k"],
                                                           truncate=params["truncate"]))
        return JSONResponse(fill_mask_json(served.name, result))

    image_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}, "model": {"type": "string"},
            "top_k": {"type": "integer"}, "return_logits": {"type": "boolean"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }}}

    @app.post("/classify/image", response_model=ClassificationResponse, responses=ERRORS,
              openapi_extra=image_body, summary="Classify an image (multipart field 'image', or a raw image body)")
    async def classify_image_route(request: Request, model: ModelQuery = None, top_k: TopKQuery = None,
                                   return_logits: Annotated[bool | None, Query(
                                       description="Also return every label's logit (default false).")] = None
                                   ) -> JSONResponse:
        query = {"model": model, "top_k": top_k, "return_logits": return_logits}
        if _media_type(request).startswith("image/"):
            data, form = await request.body(), FormData()
        else:
            form = await _form(request)
            data = await _upload(form, "image")
        params = _form_params(form, query, model=str, top_k=int, return_logits=bool)
        served = _resolve(request, "image-classification", params.get("model"))
        serve = request.app.state.serve
        result = await until_disconnect(request, classify_image(
            served, data, serve.limits, serve.budget, top=check_top_k(params.get("top_k", 5)),
            return_logits=params.get("return_logits", False)))
        return JSONResponse({"model": served.name, "results": [classification_json(result)]})

    flow_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["frame1", "frame2"], "properties": {
            "frame1": {"type": "string", "format": "binary"}, "frame2": {"type": "string", "format": "binary"},
            "model": {"type": "string"}, "format": {"type": "string", "enum": list(FLOW_FORMATS)}}}}}}}
    flow_responses = {**ERRORS, 200: {"description": "The flow field in the requested format.", "content": {
        fmt.media_type: {} for fmt in FLOW_FORMATS.values()}}}

    @app.post("/flow", responses=flow_responses, openapi_extra=flow_body, response_class=Response,
              summary="Dense optical flow between two frames of any (equal) size")
    async def flow_route(request: Request, model: ModelQuery = None,
                         format: Annotated[FlowFormatName | None, Query(  # noqa: A002 - the public name
                             description="Output format (default npy).")] = None) -> Response:
        form = await _form(request)
        first, second = await _upload(form, "frame1"), await _upload(form, "frame2")
        params = _form_params(form, {"model": model, "format": format}, model=str, format=str)
        fmt = params.get("format", "npy")
        if fmt not in FLOW_FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FLOW_FORMATS)}, got {fmt[:20]!r}")
        served = _resolve(request, "optical-flow", params.get("model"))
        encoder = FLOW_FORMATS[fmt]
        if fmt == "json":  # the JSON answer also names the model, as every JSON answer does
            def encode(field):
                return json.dumps({"model": served.name, **to_json(field)}, separators=(",", ":")).encode()
        else:
            encode = encoder.encode

        def answer(field: np.ndarray) -> tuple[tuple[int, ...], bytes]:
            return field.shape, encode(field)

        # The encoding (PNG and JSON take many times the field's memory) counts against the
        # request's decode budget, and runs off the event loop.
        serve = request.app.state.serve
        shape, body = await until_disconnect(request, estimate_flow(
            served, first, second, serve.limits, serve.budget, answer=answer,
            answer_bytes_per_pixel=encoder.bytes_per_pixel))
        headers = {"x-model": served.name, "x-flow-height": str(shape[0]), "x-flow-width": str(shape[1])}
        return Response(body, media_type=encoder.media_type, headers=headers)

    @app.get("/models", response_model=ModelList, summary="Every model of the repository with its state")
    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse(models_json(request.app.state.serve.registry))

    @app.get("/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}}, summary="One model")
    async def get_model(request: Request, name: str) -> JSONResponse:
        return JSONResponse(request.app.state.serve.registry.get(name).describe())

    @app.get("/models/{name}/labels", responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
             summary="The label names of a classifier, in index order")
    async def get_labels(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"model": name, "labels": request.app.state.serve.registry.get(name).label_names()})

    @app.get("/health/live", summary="The process is up")
    async def live() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready", summary="200 when every model is ready; 503 with per-model states otherwise",
             responses={503: {"description": "Not ready: a model is loading or failed, or the server is draining. "
                                             "The body has the same shape as the 200 answer."}})
    async def ready(request: Request) -> JSONResponse:
        serve: ServerState = request.app.state.serve
        models = {name: {"state": m.state, **({"reason": m.reason} if m.reason else {})}
                  for name, m in serve.registry.models.items()}
        if serve.draining:
            return JSONResponse({"status": "draining", "models": models}, status_code=503)
        if serve.registry.ready:
            return JSONResponse({"status": "ready", "models": models})
        return JSONResponse({"status": "not_ready", "models": models}, status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.serve.metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated schema plus the request bodies that handlers parse themselves."""
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for body in (ClassifyTextRequest, FillMaskRequest):
                found = body.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[body.__name__] = found
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Added innermost first: request context (ids, metrics) → API key → body limit → routes.
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyAuth, api_key=api_key, open_paths=OPEN_PATHS)
    app.add_middleware(RequestContext, metrics=state.metrics)
    return app
