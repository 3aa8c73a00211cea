"""The gRPC front end: ``perceiver.v1.Perceiver`` on a grpc.aio server in the REST process.

This module is the plumbing every RPC shares — request ids, the API key, metrics, the
mapping of :class:`ServeError` to status codes — plus standard health checking, reflection
and the server's lifecycle. The RPCs themselves are in :mod:`.grpc_service` and
:mod:`.grpc_video`.

Requests are parsed here rather than by grpc, so a malformed message (bad wire format, a
string that is not UTF-8) is INVALID_ARGUMENT, not the UNKNOWN grpc would answer. Health and
reflection need no API key, like REST's ``/health/*`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..engine import ModelRegistry, ServedModel
from ..engine.registry import READY
from ..errors import InvalidInput, PortUnavailable, ServeError, ShuttingDown, Unauthenticated
from ..pb.perceiver.v1 import perceiver_pb2 as pb
from ..settings import Settings
from .auth import bearer_credential, offers_credential
from .common import check_top_k
from .middleware import new_request_id
from .rest import ServerState

log = logging.getLogger("perceiver_serve")
access_log = logging.getLogger("perceiver_serve.access")

SERVICE = pb.DESCRIPTOR.services_by_name["Perceiver"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
WATCH_INTERVAL_S = 0.25
# A client's cancel reaches a stream's handler as the end of its input first and as the
# cancellation a moment later (about a millisecond; this allows for a loaded machine).
CANCEL_AFTER_END_OF_INPUT_S = 0.25
DEFAULT_TOP_K = 5


@dataclasses.dataclass(eq=False)
class RpcCall:
    """One RPC as its handler sees it: ids, the model it resolved (for metrics), its deadline."""

    context: grpc.aio.ServicerContext
    request_id: str
    model: str = ""
    input_ended: bool = False  # a streaming RPC has read the end of its input

    def resolve(self, registry: ModelRegistry, task: str, name: str) -> ServedModel:
        served = registry.resolve(task, name or None)
        self.model = served.name
        return served

    def deadline(self) -> float | None:
        """The client's deadline on the ``time.monotonic`` clock the batcher uses, if it set one."""
        remaining = self.context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining


def top_k_of(request: Message) -> int:
    """A request's ``optional uint32 top_k``, checked; unset means the default, as in REST."""
    return check_top_k(request.top_k) if request.HasField("top_k") else DEFAULT_TOP_K


Handler = Callable[[Any, RpcCall], Awaitable[Message | None]]


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _parse(message_type: type[Message], data: bytes) -> Message:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise InvalidInput(f"malformed {message_type.DESCRIPTOR.name} message: {exc}",
                           code="malformed_message") from None


async def _parse_stream(message_type: type[Message], raw: AsyncIterator[bytes], call: RpcCall
                        ) -> AsyncIterator[Message]:
    async for data in raw:
        yield _parse(message_type, data)
    call.input_ended = True


class _InFlight:
    """How many RPCs are inside a handler right now: the drain waits until none are."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


class _Rpc:
    """A grpc behaviour around one handler: everything an RPC does besides its own work."""

    def __init__(self, name: str, handler: Handler, request_type: type[Message], streaming: bool,
                 state: ServerState, api_key: str | None, in_flight: _InFlight) -> None:
        self.name = name
        self.handler = handler
        self.request_type = request_type
        self.streaming = streaming
        self.state = state
        self.in_flight = in_flight
        self.metrics = state.metrics
        self.expected_authorization = bearer_credential(api_key) if api_key else None

    async def handle(self, request: Any, context: grpc.aio.ServicerContext) -> Message | None:
        call = RpcCall(context, new_request_id(_metadata(context, "x-request-id")))
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        status, started = "UNKNOWN", time.perf_counter()
        failure: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None
        # Counted and logged before an error status goes out (abort sends it at once), so a
        # client that has its answer sees the RPC in the metrics.
        with self.metrics.track_inflight("grpc"), self.in_flight.track():
            try:
                if self.state.draining:
                    raise ShuttingDown("the server is draining; send this request to another replica")
                self._authenticate(context)
                if self.streaming:
                    request = _parse_stream(self.request_type, request, call)
                else:
                    request = _parse(self.request_type, request)
                response = await self._run(request, call)
                status = "OK"
                return response
            except ServeError as exc:
                status = exc.grpc_status
                message = exc.message
                if exc.http_status >= 500:
                    message = f"{message} (request id {call.request_id})"
                headers = tuple((key.lower(), value) for key, value in exc.headers.items())
                failure = (grpc.StatusCode[status], message, (("x-error-code", exc.code), *headers))
            except asyncio.CancelledError:  # the client cancelled, went away, or its deadline passed
                remaining = context.time_remaining()
                status = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
                raise
            except Exception:  # a bug: INTERNAL with the request id, logged, and the server keeps serving
                status = "INTERNAL"
                access_log.exception("unhandled error in %s", self.name, extra={"request_id": call.request_id})
                failure = (grpc.StatusCode.INTERNAL, f"internal error; request id {call.request_id}", ())
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.observe_request(call.model, self.name, "grpc", status, elapsed)
                access_log.info("grpc %s %s %.1fms", self.name, status, elapsed * 1000,
                                extra={"request_id": call.request_id, "model": call.model, "status": status,
                                       "duration_ms": round(elapsed * 1000, 2), "protocol": "grpc"})
        code, message, trailers = failure
        await context.abort(code, message, trailing_metadata=(("x-request-id", call.request_id), *trailers))

    async def _run(self, request: Any, call: RpcCall) -> Message | None:
        """The handler; a stream it refuses at the end of its input gets a moment to turn out cancelled.

        A stream cancelled after its config would otherwise be refused for what its input
        lacked ("no frames") and counted and logged as a client error rather than a cancel.
        """
        try:
            return await self.handler(request, call)
        except ServeError:
            if call.input_ended:
                await asyncio.sleep(CANCEL_AFTER_END_OF_INPUT_S)  # a cancel arrives here as CancelledError
            raise

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        if self.expected_authorization is None:
            return
        offered = _metadata(context, "authorization")
        if not offers_credential(offered.encode("utf-8", "replace") if offered is not None else None,
                                 self.expected_authorization):
            raise Unauthenticated("missing or wrong API key (metadata authorization: Bearer …)")


def service_handler(service: object, state: ServerState, api_key: str | None,
                    in_flight: _InFlight) -> grpc.GenericRpcHandler:
    """``perceiver.v1.Perceiver``: each RPC of the .proto bound to ``service``'s method of its name."""
    handlers = {}
    for method in SERVICE.methods:
        streaming = method.client_streaming
        rpc = _Rpc(method.name, getattr(service, method.name), getattr(pb, method.input_type.name), streaming,
                   state, api_key, in_flight)
        serialize = getattr(pb, method.output_type.name).SerializeToString
        factory = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(rpc.handle, request_deserializer=None, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


class HealthService(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health``, answered from the live server state.

    ``""`` and ``perceiver.v1.Perceiver`` are SERVING when every model is ready, a model's
    name when that model is; everything is NOT_SERVING while the server drains.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def status(self, service: str) -> int:
        registry = self.state.registry
        if service in ("", SERVICE.full_name):
            serving = registry.ready
        elif service in registry.models:
            serving = registry.models[service].state == READY
        else:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if serving and not self.state.draining:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> None:
        """Send each change of status; once draining, say NOT_SERVING and end, so as not to hold the drain."""
        last = None
        while True:
            draining = self.state.draining  # read before the status, so the last one sent says NOT_SERVING
            status = self.status(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if draining:
                return
            await asyncio.sleep(WATCH_INTERVAL_S)


class GrpcServer:
    """The gRPC port of the server process: started next to uvicorn, stopped with grace on drain."""

    def __init__(self, state: ServerState, settings: Settings) -> None:
        from .grpc_service import PerceiverService  # the RPCs build on this module's plumbing

        self.settings = settings
        self.in_flight = _InFlight()
        limit = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a port another process holds is an error, not shared
        ])
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        service = PerceiverService(state, max_message_bytes=limit)
        self.server.add_generic_rpc_handlers((service_handler(service, state, api_key, self.in_flight),))
        health_pb2_grpc.add_HealthServicer_to_server(HealthService(state), self.server)
        reflection.enable_server_reflection((SERVICE.full_name, HEALTH_SERVICE, reflection.SERVICE_NAME), self.server)
        self.port: int | None = None
        self._stopping: asyncio.Future | None = None

    async def start(self) -> int:
        """Listen on ``settings.host:settings.grpc_port`` (0: a free port) and return the port."""
        settings = self.settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            if settings.tls_cert and settings.tls_key:
                credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(),
                                                            settings.tls_cert.read_bytes())])
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only "Failed to bind to address"
            raise PortUnavailable(f"cannot listen for gRPC on {address}: {exc} (in use, or not permitted)") from None
        await self.server.start()
        log.info("gRPC on %s:%d%s", settings.host, self.port, " (TLS)" if settings.tls_cert else "")
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop once the RPCs in flight have finished, or after ``grace`` seconds.

        While the server drains (``state.draining``), new RPCs are already answered UNAVAILABLE
        by the service itself and health says NOT_SERVING; the port stays open until the RPCs
        in flight are done. Closing it earlier would make grpc cancel calls that had arrived
        but not yet reached a handler, which their clients would see as CANCELLED rather than
        as a refusal to retry elsewhere. RPCs still running when the grace period ends are
        cancelled.
        """
        if self._stopping is None:
            deadline = time.monotonic() + grace
            while self.in_flight.count and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._stopping = asyncio.ensure_future(self.server.stop(max(deadline - time.monotonic(), 0.5)))
        await self._stopping
