"""One exception for everything a call can end with, whichever protocol carried it."""

from __future__ import annotations

# Statuses that mean the request itself was wrong: the CLI exits 2 for these, 1 for the rest.
INPUT_STATUSES = frozenset({"400", "413", "415", "422", "INVALID_ARGUMENT"})


class PerceiverError(Exception):
    """A failed call: the server's machine-readable ``code``, its message and the request id to quote.

    ``status`` is the HTTP status (``"429"``) or the gRPC status name (``"RESOURCE_EXHAUSTED"``);
    ``retry_after`` is set when the server said when to try again (a full queue). Failures that
    never reached an answer (connection refused, TLS, timeouts) use the codes ``unreachable``
    and ``deadline_exceeded`` with no request id.
    """

    def __init__(self, code: str, message: str, *, status: str = "", request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def bad_input(self) -> bool:
        return self.status in INPUT_STATUSES

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{where}"


class InputError(PerceiverError):
    """A local file the client cannot use (missing, not a video, corrupt); the CLI exits 2.

    A :class:`PerceiverError` (code ``invalid_input``), so that one ``except`` catches every failure."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_input", message)

    @property
    def bad_input(self) -> bool:
        return True

    def __str__(self) -> str:
        return self.message


def unsendable(exc: Exception) -> PerceiverError:
    """A request the client could not encode (a value of the wrong type or range, text that isn't
    Unicode): refused before it is sent, as the server would refuse it (``invalid_request``)."""
    return PerceiverError("invalid_request", f"the request cannot be sent: {exc}", status="INVALID_ARGUMENT")
