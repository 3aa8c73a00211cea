"""Where the server is and how to talk to it, and the retry rule every call shares."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import PerceiverError

T = TypeVar("T")

API_KEY_ENV = "PERCEIVER_API_KEY"
MAX_RETRY_WAIT_S = 30.0  # a server asking for longer is treated as a refusal


@dataclasses.dataclass(frozen=True)
class Connection:
    """``url`` is the REST base URL (its scheme decides TLS); ``grpc_address`` is ``host:port``.

    REST carries the unary calls unless ``use_grpc``; the video stream is gRPC only. ``tls``
    turns TLS on for gRPC; ``ca`` is a PEM bundle trusted for both, in place of the system's.
    ``timeout`` is each unary call's deadline in seconds (retries included; ``None``: none), and
    ``retries`` bounds how often a call refused with a Retry-After (a full queue) is sent again.
    """

    url: str = "http://127.0.0.1:8000"
    grpc_address: str = "127.0.0.1:50051"
    use_grpc: bool = False
    api_key: str | None = dataclasses.field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    tls: bool = False
    ca: str | None = None
    timeout: float | None = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        # Sent as an HTTP header and gRPC metadata: both carry printable ASCII only, and a key they can't
        # carry would otherwise fail each call inside the transport ("unreachable", or no error of ours).
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()):
            raise PerceiverError("invalid_request", "the API key must be printable ASCII (it travels in a header)",
                                 status="INVALID_ARGUMENT")
        if self.timeout is not None and not self.timeout > 0:
            raise PerceiverError("invalid_request", f"the timeout must be a positive number of seconds, "
                                                    f"not {self.timeout}", status="INVALID_ARGUMENT")

    def read_ca(self) -> bytes | None:
        if self.ca is None:
            return None
        try:
            with open(self.ca, "rb") as file:
                return file.read()
        except OSError as exc:
            raise PerceiverError("bad_ca", f"cannot read the CA bundle {self.ca}: {exc.strerror}") from None


async def with_retries(call: Callable[[float | None], Awaitable[T]], timeout: float | None, retries: int) -> T:
    """Run ``call(seconds_left)``; when the server says "retry after", wait and try again, within bounds.

    Only refusals that carry a Retry-After are retried (the work was never started, so a
    retry cannot run it twice), at most ``retries`` times and never past the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    attempt = 0
    while True:
        left = None if deadline is None else max(deadline - loop.time(), 0.001)
        try:
            return await call(left)
        except PerceiverError as exc:
            wait = exc.retry_after
            if wait is None or attempt >= retries or wait > MAX_RETRY_WAIT_S:
                raise
            if deadline is not None and loop.time() + wait >= deadline:
                raise
            attempt += 1
            await asyncio.sleep(wait)
