"""What every RPC shares, whichever service it belongs to: request ids, the API key,
metrics, the mapping of :class:`ServeError` to status codes (the one place gRPC errors are
built), and binding a service's handlers to grpc.

Requests are parsed here rather than by grpc, so a malformed message (bad wire format, a
string that is not UTF-8) is INVALID_ARGUMENT, not the UNKNOWN grpc would answer.
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
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from ...engine import ModelRegistry, ServedModel
from ...errors import InvalidInput, ServeError, ShuttingDown, Unauthenticated
from ..auth import bearer_credential, offers_credential
from ..middleware import new_request_id
from ..state import ServerState

access_log = logging.getLogger("perceiver_serve.access")
# A client's cancel reaches a stream's handler as the end of its input first and as the
# cancellation a moment later (about a millisecond; this allows for a loaded machine).
CANCEL_AFTER_END_OF_INPUT_S = 0.25


#: Longest status message sent: the details travel in a trailer, and gRPC refuses metadata over 16 KiB
#: (the client then sees a transport error with no status of ours). Messages quote what the client sent
#: (a model name, a service name), which may be anything up to the message limit.
MAX_DETAILS = 2000


def fitted_details(message: str) -> str:
    """``message``, cut to :data:`MAX_DETAILS` characters (saying how much was cut) if longer."""
    if len(message) <= MAX_DETAILS:
        return message
    return f"{message[:MAX_DETAILS]}… ({len(message) - MAX_DETAILS} more characters cut)"


@dataclasses.dataclass(eq=False)
class RpcCall:
    """One RPC as its handler sees it: ids, the model it resolved (for metrics), its deadline."""

    context: grpc.aio.ServicerContext
    request_id: str
    model: str = ""
    input_ended: bool = False  # a streaming RPC has read the end of its input
    leases: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

    def resolve(self, registry: ModelRegistry, task: str, name: str, version: str = "") -> ServedModel:
        """The model for this RPC, leased until the RPC ends (a reload or unload lets it finish on its copy)."""
        served = self.leases.enter_context(registry.lease(task, name or None, version or None))
        self.model = served.name
        return served

    def deadline(self) -> float | None:
        """The client's deadline on the ``time.monotonic`` clock the batcher uses, if it set one."""
        remaining = self.context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining


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


class InFlight:
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
                 state: ServerState, api_key: str | None, in_flight: InFlight, protocol: str = "grpc",
                 key_name: str = "API key") -> None:
        self.name = name
        self.protocol = protocol
        self.handler = handler
        self.request_type = request_type
        self.streaming = streaming
        self.state = state
        self.in_flight = in_flight
        self.metrics = state.metrics
        self.expected_authorization = bearer_credential(api_key) if api_key else None
        self.key_name = key_name

    async def handle(self, request: Any, context: grpc.aio.ServicerContext) -> Message | None:
        call = RpcCall(context, new_request_id(_metadata(context, "x-request-id")))
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        status, started = "UNKNOWN", time.perf_counter()
        failure: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None
        # Counted and logged before an error status goes out (abort sends it at once), so a
        # client that has its answer sees the RPC in the metrics.
        with self.metrics.track_inflight(self.protocol), self.in_flight.track(), call.leases:
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
                message = fitted_details(message)
                headers = tuple((key.lower(), value) for key, value in exc.headers.items())
                failure = (grpc.StatusCode[status], message, (("x-error-code", exc.code), *headers))
            except asyncio.CancelledError:  # the client cancelled, went away, or its deadline passed
                remaining = context.time_remaining()
                status = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
                raise
            except Exception:  # noqa: BLE001 - a bug: INTERNAL with the request id, logged, and the server keeps serving
                status = "INTERNAL"
                access_log.exception("unhandled error in %s", self.name, extra={"request_id": call.request_id})
                failure = (grpc.StatusCode.INTERNAL, f"internal error; request id {call.request_id}", ())
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.observe_request(call.model, self.name, self.protocol, status, elapsed)
                access_log.info("grpc %s %s %.1fms", self.name, status, elapsed * 1000,
                                extra={"request_id": call.request_id, "model": call.model, "status": status,
                                       "duration_ms": round(elapsed * 1000, 2), "protocol": self.protocol})
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
            raise Unauthenticated(f"missing or wrong {self.key_name} (metadata authorization: Bearer …)")


def bind_service(service: ServiceDescriptor, handlers: dict[str, Handler], state: ServerState,
                 api_key: str | None, in_flight: InFlight, *, protocol: str = "grpc",
                 open_methods: frozenset[str] = frozenset(), key_name: str = "API key") -> grpc.GenericRpcHandler:
    """The RPCs of ``service`` named in ``handlers``, each wrapped in what all RPCs share.

    ``open_methods`` answer without the API key (health probes); ``protocol`` labels the metrics;
    ``key_name`` is what a refusal calls ``api_key`` ("admin key" for model control, as REST says).
    """
    unknown = set(handlers) - {method.name for method in service.methods}
    assert not unknown, f"{service.full_name} has no method {unknown}"
    bound = {}
    for method in service.methods:
        if method.name not in handlers:  # another handler binds it (one service, two keys)
            continue
        streaming = method.client_streaming
        rpc = _Rpc(method.name, handlers[method.name], message_factory.GetMessageClass(method.input_type), streaming,
                   state, None if method.name in open_methods else api_key, in_flight, protocol, key_name)
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        factory = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        bound[method.name] = factory(rpc.handle, request_deserializer=None, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(service.full_name, bound)
