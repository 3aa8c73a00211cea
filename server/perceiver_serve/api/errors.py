"""Errors on the HTTP port: one body per protocol, chosen by the path.

REST answers ``{"error": {"code", "message"}}``; the Open Inference Protocol's routes
(``/v2...``) answer ``{"error": "<message>"}`` as its specification says, and its repository
extension (``/v2/repository...``, model control) adds our code beside it,
``{"error": "<message>", "code": "load_failed"}``: tritonclient reads ``error`` as a string there
too. Routes, exception handlers and the middleware all build their bodies here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import ClientDisconnected, ServeError

_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type"}


V2_PREFIX = "/v2"


REPOSITORY_PREFIX = V2_PREFIX + "/repository"  # model control: the protocol's repository extension


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def protocol_of(path: str) -> str:
    """The ``protocol`` of metrics and logs: ``oip`` for the Open Inference Protocol's inference paths,
    ``rest`` for the others (model control: our contract, under the prefix KServe and Triton use)."""
    return "oip" if _under(path, V2_PREFIX) and not _under(path, REPOSITORY_PREFIX) else "rest"


def rest_error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def oip_error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def error_body(path: str, code: str, message: str) -> dict[str, Any]:
    """The body of an error answered on ``path``, whether a route or a middleware answers."""
    if _under(path, REPOSITORY_PREFIX):
        return oip_error_body(message) | {"code": code}
    return oip_error_body(message) if protocol_of(path) == "oip" else rest_error_body(code, message)


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, code, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        return 400, "malformed_json", f"request body is not valid JSON: {detail.get('ctx', {}).get('error', '')}"
    parts = []
    for e in errors[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return 422, "invalid_request", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        message = exc.message
        if exc.http_status >= 500:
            message = f"{message} (request id {getattr(request.state, 'request_id', '-')})"
        return error_response(request, exc.http_status, exc.code, message, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Raised by the body's reader when the client goes (or its body breaks off) mid-upload: the
        # client's doing, logged and counted as the 499 it is, as a disconnect during inference is.
        return await _serve_error(request, ClientDisconnected("the client disconnected while sending its request"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        return error_response(request, status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
