"""ASGI middleware around the REST app: request ids and metrics, API-key auth, body limits.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so streaming bodies pass through untouched
and a rejected request is answered before its body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.routing import Match

from ..errors import BodyTimeout, InvalidInput, PayloadTooLarge
from ..metrics import Metrics
from .auth import bearer_credential, offers_credential
from .errors import error_body, protocol_of

log = logging.getLogger("perceiver_serve.access")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Probes and scrapes: neither counted as requests nor in flight (they would count themselves).
UNCOUNTED_PATHS = frozenset({"/metrics", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})


async def send_error(scope: Scope, send: Send, status: int, code: str, message: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(scope["path"], code, message), ensure_ascii=False, separators=(",", ":")).encode()  # as routes
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


#: Fresh request ids: 128 random bits, from a generator seeded once from the system's randomness (no
#: system call per request, as ``uuid.uuid4`` makes: 3% of the event loop's time per text request).
_IDS = random.Random(uuid.uuid4().int)


def new_request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a fresh one."""
    return offered if offered and REQUEST_ID.fullmatch(offered) else f"{_IDS.getrandbits(128):032x}"


class RequestContext:
    """Request id in and out, the in-flight gauge, per-request metrics, an access log line, model leases.

    ``routes`` (the app's) name the endpoint of a request that a middleware answered before routing (a
    body over the limit, a missing key): its route's path, as when the route answers, not "unmatched".
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's own list: routes added later count too

    def _endpoint(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered before routing, or no route has this path
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        # The models this request resolved, held (registry leases) until its answer is sent.
        scope["state"]["leases"] = leases = contextlib.ExitStack()
        status, responded = 500, False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        protocol = protocol_of(scope["path"])
        counted = scope["path"] not in UNCOUNTED_PATHS  # a scrape does not count itself in flight
        with self.metrics.track_inflight(protocol) if counted else contextlib.nullcontext(), leases:
            try:
                await self.app(scope, receive, send_with_id)
            except asyncio.CancelledError:
                # Only the server's own shutdown cancels a request, once its grace period has run out: the
                # client gets the clean refusal a draining server gives (uvicorn would answer a bare 500).
                if responded:
                    raise
                log.warning("%s %s cancelled: the grace period ran out before it finished", scope["method"],
                            scope["path"], extra={"request_id": request_id})
                await send_error(scope, send_with_id, 503, "shutting_down",
                                 "the server stopped before this request was done: its grace period ran out")
            except Exception:  # a bug: answer 500 with the request id, log it, keep serving
                log.exception("unhandled error in %s %s", scope["method"], scope["path"],
                              extra={"request_id": request_id})
                if not responded:
                    await send_error(scope, send_with_id, 500, "internal", f"internal error; request id {request_id}")
            finally:
                elapsed = time.perf_counter() - started
                endpoint = self._endpoint(scope)
                model = scope["state"].get("model", "")
                if endpoint not in UNCOUNTED_PATHS:
                    self.metrics.observe_request(model, endpoint, protocol, status, elapsed)
                log.info("%s %s %s %.1fms", scope["method"], scope["path"], status, elapsed * 1000,
                         extra={"request_id": request_id, "model": model, "status": status,
                                "duration_ms": round(elapsed * 1000, 2), "protocol": protocol})


class ApiKeyAuth:
    """Every path needs ``Authorization: Bearer <key>`` except an exact allow-list of open ones.

    Deny by default: unknown paths, other spellings ("/Health/live", "/health/live/") and every
    method are covered, so there is no route variant that skips the check. Paths under
    ``admin_prefix`` (model control) take the admin key when one is set, and then the API key
    alone is refused; without an admin key they take the API key like every other path.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, open_paths: frozenset[str],
                 admin_key: str | None = None, admin_prefix: str = "/v2/repository") -> None:
        self.app = app
        self.expected = bearer_credential(api_key) if api_key else None
        self.admin = bearer_credential(admin_key) if admin_key else self.expected
        self.open_paths = open_paths
        self.admin_prefix = admin_prefix

    def _expected(self, path: str) -> bytes | None:
        if path == self.admin_prefix or path.startswith(self.admin_prefix + "/"):
            return self.admin
        return None if path in self.open_paths else self.expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        expected = self._expected(scope["path"]) if scope["type"] == "http" else None
        if expected is not None:
            offered = _header(scope, b"authorization")
            if not offers_credential(offered.encode("latin-1") if offered is not None else None, expected):
                which = "admin key" if expected is not self.expected else "API key"
                await send_error(scope, send, 401, "unauthenticated", f"missing or wrong {which} (Authorization: Bearer …)",
                                 [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


#: Content-Encodings a request body may come in (tritonclient's ``request_compression_algorithm``):
#: zlib's window bits for each. "deflate" is the zlib format (RFC 9110), as tritonclient sends it.
_COMPRESSED = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflate(decoder: Any, data: bytes, room: int, last: bool, encoding: str) -> bytes:
    """The next part of a compressed body, decompressed: at most ``room`` + 1 bytes (one more than
    fits tells the caller it is too large, without inflating a bomb any further)."""
    try:
        out = decoder.decompress(data, max(room, 0) + 1)
        if last and len(out) <= room:  # every input byte was taken: flush adds only what zlib held back
            out += decoder.flush()
    except zlib.error:
        raise InvalidInput(f"the request body is not valid {encoding} data (Content-Encoding: {encoding})",
                           code="bad_encoding") from None
    if last and len(out) <= room and (not decoder.eof or decoder.unused_data):
        raise InvalidInput(f"the {encoding} request body is truncated or has data after its end",
                           code="bad_encoding")
    return out


class BodyLimit:
    """Refuse bodies over ``limit`` bytes: by Content-Length up front, else while streaming; and bodies
    whose next part takes longer than ``timeout_s`` to arrive (a stalled or trickled upload).

    A body sent with ``Content-Encoding: gzip`` or ``deflate`` is decompressed as it arrives, and the
    limit counts its decompressed bytes (a compression bomb stops at the limit); other encodings are
    refused (415), not misread."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_error(scope, send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(declared) > self.limit:
                await send_error(scope, send, 413, "too_large",
                                 f"request body is {declared} bytes; the limit is {self.limit} bytes")
                return
        decoder, encoding = None, (_header(scope, b"content-encoding") or "").strip().lower()
        if encoding not in ("", "identity"):
            if encoding not in _COMPRESSED:
                await send_error(scope, send, 415, "unsupported_media_type",
                                 f"Content-Encoding {encoding[:40]!r} is not supported; send the body as it is, "
                                 "or compressed with gzip or deflate")
                return
            decoder = zlib.decompressobj(_COMPRESSED[encoding])
            # The app reads the body as decompressed: the compressed body's length and encoding no longer apply.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        seen, complete = 0, False
        limit, timeout_s = self.limit, self.timeout_s

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:  # later reads wait for the disconnect a request may watch for: no limit on those
                return await receive()
            try:
                async with asyncio.timeout(timeout_s):  # a timer handle, no task: cheap for bodies already here
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body stalled: no part of it arrived for {timeout_s:g} s "
                                  f"({seen} bytes had)") from None
            if message["type"] == "http.request":
                last = not message.get("more_body", False)
                if decoder is not None:
                    message = {**message, "body": _inflate(decoder, message.get("body", b""), limit - seen, last,
                                                           encoding)}
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes"
                                          + (" once decompressed" if decoder is not None else ""))
                complete = last
            return message

        await self.app(scope, counted, send)
