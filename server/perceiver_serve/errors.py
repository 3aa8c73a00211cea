"""One error model for the whole server.

Every failure a client can cause or observe is a :class:`ServeError` with a stable ``code``
string, an HTTP status and a gRPC status name. REST turns it into
``{"error": {"code", "message"}}`` with ``http_status``; gRPC aborts with ``grpc_status``.
Anything else reaching a front end is a bug and is reported as ``internal`` (500 / INTERNAL).
"""

from __future__ import annotations


class ServeError(Exception):
    code = "internal"
    http_status = 500
    grpc_status = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def __str__(self) -> str:
        return self.message


class InvalidInput(ServeError):
    """Malformed, truncated or semantically wrong input (400 / INVALID_ARGUMENT)."""

    code = "invalid_input"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class InvalidRequest(InvalidInput):
    """A request that does not match the endpoint's schema (422 / INVALID_ARGUMENT)."""

    code = "invalid_request"
    http_status = 422


class PayloadTooLarge(ServeError):
    """A body, text, image or stream beyond a configured limit (413 / INVALID_ARGUMENT)."""

    code = "too_large"
    http_status = 413
    grpc_status = "INVALID_ARGUMENT"


class DecodeBudgetExceeded(ServeError):
    """Decoding the input needs more memory than the server's whole decode budget (413 / RESOURCE_EXHAUSTED).

    Unlike a per-input limit this one depends on the server's configuration, not the input
    alone; gRPC clients see the status they also get for other exhausted server resources.
    """

    code = "decode_budget"
    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(ServeError):
    """A body or upload in a format we do not read (415 / INVALID_ARGUMENT)."""

    code = "unsupported_media_type"
    http_status = 415
    grpc_status = "INVALID_ARGUMENT"


class ModelNotFound(ServeError):
    """No such model, or a model of another task (404 / NOT_FOUND)."""

    code = "model_not_found"
    http_status = 404
    grpc_status = "NOT_FOUND"


class Unauthenticated(ServeError):
    code = "unauthenticated"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"


class QueueFull(ServeError):
    """The model's queue is at its bound; retry later (429 / RESOURCE_EXHAUSTED)."""

    code = "queue_full"
    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class NotReady(ServeError):
    """The model is still loading or failed to load (503 / UNAVAILABLE)."""

    code = "not_ready"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class DeadlineExceeded(ServeError):
    """The request's deadline passed before its work was computed (504 / DEADLINE_EXCEEDED)."""

    code = "deadline_exceeded"
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"


class BodyTimeout(ServeError):
    """A request body that stopped arriving before it was complete (408 / DEADLINE_EXCEEDED): a client
    may not hold a connection and a request slot open by trickling, or pausing, its upload."""

    code = "body_timeout"
    http_status = 408
    grpc_status = "DEADLINE_EXCEEDED"


class ShuttingDown(ServeError):
    """The server is draining and accepts no new work (503 / UNAVAILABLE)."""

    code = "shutting_down"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class ClientDisconnected(ServeError):
    """The client went away before its answer was ready; its queued work was dropped (499 / CANCELLED).

    Nobody reads this answer: it exists so that logs and metrics record a client's choice,
    not a server failure.
    """

    code = "client_disconnected"
    http_status = 499
    grpc_status = "CANCELLED"


class InferenceFailed(ServeError):
    """The model raised while computing this request's batch (500 / INTERNAL)."""

    code = "inference_failed"
    http_status = 500
    grpc_status = "INTERNAL"


class LoadFailed(ServeError):
    """A load or reload asked for over the repository API did not bring the model up.

    The files on disk are at fault, not the request's form; any previous copy keeps serving.
    """

    code = "load_failed"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"


class ControlConflict(ServeError):
    """A load that another call (an unload of the same model) overtook before it answered (409 / ABORTED)."""

    code = "conflict"
    http_status = 409
    grpc_status = "ABORTED"


class ModelControlDisabled(ServeError):
    """A load or unload on a server started without ``--model-control explicit|poll``."""

    code = "model_control_disabled"
    http_status = 404
    grpc_status = "UNIMPLEMENTED"


class PortUnavailable(OSError):
    """A port the server was told to listen on cannot be bound (in use, or not permitted).

    Not a request error: it ends the start-up with one line and its own exit code.
    """
