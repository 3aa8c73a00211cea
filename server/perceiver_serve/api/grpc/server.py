"""The gRPC port of the server process: every service of this server on one grpc.aio server.

Health and reflection need no API key, like REST's ``/health/*`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...errors import PortUnavailable
from ...settings import Settings
from ..state import ServerState
from .calls import InFlight, bind_service
from .health import HealthService
from .inference import OPEN_METHODS as INFERENCE_OPEN_METHODS
from .inference import SERVICE as INFERENCE_SERVICE
from .inference import InferenceService
from .perceiver import SERVICE, PerceiverService
from .repository import RepositoryService

log = logging.getLogger("perceiver_serve")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class GrpcServer:
    """The gRPC port of the server process: started next to uvicorn, stopped with grace on drain."""

    def __init__(self, state: ServerState, settings: Settings) -> None:
        self.settings = settings
        self.in_flight = InFlight()
        limit = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a port another process holds is an error, not shared
        ])
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        perceiver = PerceiverService(state, max_message_bytes=limit)
        inference = InferenceService(state, max_message_bytes=limit)
        # Model control takes the admin key when there is one (then the API key alone is refused).
        admin_key, admin_key_name = ((settings.admin_key.get_secret_value(), "admin key") if settings.admin_key
                                     else (api_key, "API key"))
        control = RepositoryService(state, control=settings.model_control != "none")
        self.server.add_generic_rpc_handlers((
            bind_service(SERVICE, perceiver.handlers(), state, api_key, self.in_flight),
            bind_service(INFERENCE_SERVICE, inference.handlers(), state, api_key, self.in_flight, protocol="oip",
                         open_methods=INFERENCE_OPEN_METHODS),
            # The same service's repository calls, under their own key: a second handler for other methods.
            bind_service(INFERENCE_SERVICE, control.handlers(), state, admin_key, self.in_flight, protocol="oip",
                         key_name=admin_key_name),
        ))
        names = (SERVICE.full_name, INFERENCE_SERVICE.full_name)
        health_pb2_grpc.add_HealthServicer_to_server(HealthService(state, names), self.server)
        reflection.enable_server_reflection((*names, HEALTH_SERVICE, reflection.SERVICE_NAME), self.server)
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
