"""``grpc.health.v1.Health``, answered from the live server state; it needs no API key."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...engine.registry import READY
from ..state import ServerState
from .calls import fitted_details

WATCH_INTERVAL_S = 0.25


class HealthService(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health``, answered from the live server state.

    ``""`` and every service of this server are SERVING when the server is ready (every model it
    is meant to serve has a ready copy: ``ModelRegistry.ready``), a model's name when that model
    is; everything is NOT_SERVING while the server drains.
    """

    def __init__(self, state: ServerState, services: tuple[str, ...]) -> None:
        self.state = state
        self.services = services

    def status(self, service: str) -> int:
        registry = self.state.registry
        if service in ("", *self.services):
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
            await context.abort(grpc.StatusCode.NOT_FOUND, fitted_details(f"unknown service {request.service!r}"))
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
