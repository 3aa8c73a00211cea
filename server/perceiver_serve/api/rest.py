"""The REST front end: a thin FastAPI layer derived from the task table.

Each task with a :class:`RestRoute` gets one POST route: the body (JSON, a raw upload or a
multipart form, with scalar fields from the form or the query string) becomes the task's
request fields, the task validates and answers them, and the answer goes out as JSON (or,
for a dense field such as flow, in the requested format). Handlers never run model code, and
every failure is a :class:`ServeError` rendered as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from ..answers import ErrorResponse, ModelInfo, ModelList
from ..errors import InvalidInput, InvalidRequest, ServeError, UnsupportedMediaType
from ..media.flow_formats import FLOW_FORMATS, to_json
from ..metrics import EXPOSITION_CONTENT_TYPE
from ..tasks import TASKS, Call, Task
from .disconnect import until_disconnect
from .docs import DOC_PATHS, install_docs
from .errors import install_error_handlers
from .repository import add_repository_routes
from .middleware import ApiKeyAuth, BodyLimit, RequestContext
from .oip.rest import OPEN_PATHS as V2_OPEN_PATHS
from .oip.rest import install_v2
from .state import ServerState


OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", *V2_OPEN_PATHS})


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)}
SCALARS = (str, int, float, bool)


# -- from a request to a task's fields ------------------------------------------------------------

def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _kind(annotation: Any) -> Any:
    """The plain type of a field (``str | None`` → ``str``, a ``Literal`` of strings → ``str``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return str if get_origin(annotation) is Literal else annotation


def _scalar_fields(task: Task, skip: tuple[str, ...]) -> dict[str, type]:
    """The request fields a form or query string can carry: the optional plain scalars, less ``skip``."""
    fields = {name: _kind(info.annotation) for name, info in task.request.model_fields.items()
              if not info.is_required()}
    return {name: kind for name, kind in fields.items() if kind in SCALARS and name not in skip}


async def _upload(form: FormData, field: str) -> bytes:
    value = form.get(field)
    if value is None:
        raise InvalidInput(f"multipart field {field!r} is missing", code="missing_field")
    if isinstance(value, UploadFile):
        return await value.read()
    raise InvalidRequest(f"multipart field {field!r} must be a file upload")


def _known_once(names: list[str], known: set[str], what: str) -> None:
    """Refuse a form field or query parameter (``what``) this route doesn't read, or one sent twice: either
    would otherwise be dropped without a word (which of two images was classified? ``?topk=3`` would
    answer with the default top_k), where a JSON body's is refused."""
    unknown = sorted(set(names) - known)
    if unknown:
        raise InvalidRequest(f"unknown {what}(s) {unknown}; this route reads {sorted(known)}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidRequest(f"{what}(s) {twice} sent more than once")


def _query_fields(task: Task) -> dict[str, type]:
    """The fields a route reads from its query string (those ``/openapi.json`` lists as its parameters)."""
    route = task.rest
    assert route is not None
    return _scalar_fields(task, skip=(*route.files, *(route.raw[1:] if route.raw else ())))


def _form_params(form: FormData, query: dict[str, Any], fields: dict[str, type]) -> dict[str, Any]:
    """Optional scalar parameters from form fields, falling back to query parameters."""
    out = {}
    for name, kind in fields.items():
        value = form.get(name, query.get(name))
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


async def _form(request: Request, raw: str | None = None) -> FormData:
    """The multipart form; ``raw`` names the other media type the route reads as its body (``image/*``)."""
    if _media_type(request) != "multipart/form-data":
        alternative = f" or a raw {raw}* body" if raw and raw.endswith("/") else f" or a raw {raw} body" if raw else ""
        raise UnsupportedMediaType(f"expected multipart/form-data{alternative}, got "
                                   f"{_media_type(request) or 'no content type'}")
    try:
        return await request.form(max_files=4, max_fields=16)
    except (ServeError, ClientDisconnect):
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types
        raise InvalidInput(f"malformed multipart body: {exc}", code="malformed_multipart") from None


def _raw_field(task: Task, raw: bytes, field: str) -> str | bytes:
    if _kind(task.request.model_fields[field].annotation) is bytes:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})", code="invalid_utf8") from None


async def read_request(request: Request, task: Task) -> Any:
    """The task's validated request, from whichever body its route accepts.

    Scalar fields may also come as query parameters; a field the body (or form) sets wins. Any other query
    parameter, or one given twice, is refused.
    """
    route = task.rest
    assert route is not None
    if request.scope["query_string"]:  # most requests carry none: nothing to parse or check
        _known_once([name for name, _ in request.query_params.multi_items()], set(_query_fields(task)), "query parameter")
    kind, query = _media_type(request), dict(request.query_params)
    if route.raw and (kind.startswith(route.raw[0]) if route.raw[0].endswith("/") else kind == route.raw[0]):
        field = route.raw[1]
        fields = _form_params(FormData(), query, _scalar_fields(task, skip=(field,)))
        return task.parse({field: _raw_field(task, await request.body(), field), **fields})
    if route.files:
        form = await _form(request, route.raw[0] if route.raw else None)
        scalars = _scalar_fields(task, skip=route.files)
        uploads = {name: await _upload(form, name) for name in route.files}
        _known_once([name for name, _ in form.multi_items()], {*route.files, *scalars}, "multipart field")
        return task.parse({**uploads, **_form_params(form, query, scalars)})
    if kind != "application/json":
        accepted = " or ".join(["application/json", *([route.raw[0]] if route.raw else [])])
        raise UnsupportedMediaType(f"send {accepted}, not {kind or 'no content type'}")
    body = task.parse_json(await request.body())
    from_query = _form_params(FormData(), query, _scalar_fields(task, skip=())) if query else {}
    if not from_query:
        return body
    return task.parse({**from_query, **body.model_dump(exclude_unset=True)})


# -- from a task's answer to a response -----------------------------------------------------------

def _field_encoding(model: str, fmt: str) -> Any:
    """How a dense field (flow) is encoded for the client: its shape and the bytes in ``fmt``."""
    encoder = FLOW_FORMATS[fmt]

    def encode(field: np.ndarray) -> tuple[tuple[int, ...], bytes]:
        if fmt == "json":  # the JSON answer also names the model, as every JSON answer does
            return field.shape, json.dumps({"model": model, **to_json(field)}, separators=(",", ":")).encode()
        return field.shape, encoder.encode(field)

    return encode


def _task_openapi(task: Task) -> dict[str, Any]:
    """The request body (and query parameters) this route reads itself, for /openapi.json."""
    route = task.rest
    assert route is not None
    properties = task.request.model_json_schema()["properties"]
    content: dict[str, Any] = {}
    if route.files:
        fields = {**{name: {"type": "string", "format": "binary"} for name in route.files},
                  **{name: properties[name] for name in _scalar_fields(task, skip=route.files)}}
        content["multipart/form-data"] = {"schema": {"type": "object", "required": list(route.files),
                                                     "properties": fields}}
    else:
        content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{task.request.__name__}"}}
    if route.raw:
        prefix, field = route.raw
        media = f"{prefix}*" if prefix.endswith("/") else prefix
        binary = _kind(task.request.model_fields[field].annotation) is bytes
        content[media] = {"schema": {"type": "string", **({"format": "binary"} if binary else {})}}
    parameters = [{"name": name, "in": "query", "required": False, "schema": properties[name]}
                  for name in _query_fields(task)]
    return {"requestBody": {"required": True, "content": content}, "parameters": parameters}


def _add_task_route(app: FastAPI, task: Task) -> None:
    route = task.rest
    assert route is not None and task.execute is not None and task.answer is not None
    execute, answer = task.execute, task.answer

    async def handle(request: Request) -> Response:
        body = await read_request(request, task)
        serve: ServerState = request.app.state.serve
        # Leased until the answer is sent: a reload or unload lets this request finish on its copy.
        lease = serve.registry.lease(task.name, body.model, getattr(body, "version", None))
        served = request.scope["state"]["leases"].enter_context(lease)
        request.scope["state"]["model"] = served.name
        if task.response is not None:
            result = await until_disconnect(request, execute(served, body, Call(serve.limits, serve.budget)))
            return JSONResponse(answer(served.name, result))
        # A dense field (flow) in the requested format: the encoding (PNG and JSON take many
        # times the field's memory) counts against the request's decode budget, off the event loop.
        encoder = FLOW_FORMATS[body.format]
        call = Call(serve.limits, serve.budget, encode=_field_encoding(served.name, body.format),
                    encode_bytes_per_pixel=encoder.bytes_per_pixel)
        shape, data = await until_disconnect(request, execute(served, body, call))
        headers = {"x-model": served.name, "x-flow-height": str(shape[0]), "x-flow-width": str(shape[1])}
        return Response(data, media_type=encoder.media_type, headers=headers)

    if task.response is not None:
        documented: dict[str, Any] = {"response_model": task.response, "responses": ERRORS}
    else:
        documented = {"response_class": Response, "responses": {**ERRORS, 200: {
            "description": "The field in the requested format.",
            "content": {fmt.media_type: {} for fmt in FLOW_FORMATS.values()}}}}
    app.add_api_route(route.path, handle, methods=["POST"], summary=route.summary, openapi_extra=_task_openapi(task),
                      name=task.name, **documented)


# -- the app --------------------------------------------------------------------------------------

def create_app(state: ServerState, *, api_key: str | None = None, admin_key: str | None = None,
               model_control: bool = False, max_body_bytes: int = 64 << 20, body_timeout_s: float = 30.0,
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
        # FastAPI's own OpenTelemetry hooks look the providers up on every request (5% of the event
        # loop's time per text request, measured); this server's telemetry is its Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.serve = state
    install_error_handlers(app)
    if docs:
        install_docs(app)
    routed = [task for task in TASKS.values() if task.rest is not None]
    for task in routed:
        _add_task_route(app, task)
    install_v2(app)

    @app.get("/models", response_model=ModelList, summary="Every model of the repository with its state")
    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse(request.app.state.serve.models_json())

    @app.get("/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}}, summary="One model")
    async def get_model(request: Request, name: str) -> JSONResponse:
        return JSONResponse(request.app.state.serve.registry.get(name).describe())

    @app.get("/models/{name}/labels", responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
             summary="The label names of a classifier, in index order")
    async def get_labels(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"model": name, "labels": request.app.state.serve.registry.get(name).label_names()})

    add_repository_routes(app, ERRORS, control=model_control)

    @app.get("/health/live", summary="The process is up")
    async def live() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready", summary="200 when every model the server is meant to serve is ready; 503 with per-model states otherwise",
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

    # Probes that send HEAD get the same answers without a body; undocumented twins, so that the schema's
    # operation ids stay those of the GET routes (a route of two methods names its id after either).
    for path, probe in (("/health/live", live), ("/health/ready", ready)):
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.serve.metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated schema plus the request bodies that handlers parse themselves."""
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for body in (task.request for task in routed if not task.rest.files):
                found = body.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[body.__name__] = found
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Added innermost first: request context (ids, metrics) → API key → body limit → routes.
    app.add_middleware(BodyLimit, limit=max_body_bytes, timeout_s=body_timeout_s)
    if api_key or admin_key:
        # The doc pages are open only where they exist: without them, their paths are as guarded as any.
        app.add_middleware(ApiKeyAuth, api_key=api_key, admin_key=admin_key,
                           open_paths=OPEN_PATHS | (DOC_PATHS if docs else frozenset()))
    app.add_middleware(RequestContext, metrics=state.metrics, routes=app.router.routes)
    return app
