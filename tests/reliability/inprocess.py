"""REST (uvicorn) and gRPC (grpc.aio) on one event loop in a thread of the test process.

The same servers as `perceiver-serve serve` runs, built with ``server.build_state``; tests
reach into ``state`` to wrap a model's runner or read the engine's counters.
"""

from __future__ import annotations

import asyncio

import uvicorn

from perceiver_serve.api.rest import create_app

from ..grpc.inprocess import InProcessServer
from ..support import free_port


class InProcessRestAndGrpc(InProcessServer):
    http_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def _serve(self) -> None:
        """uvicorn in the background, then the gRPC server of the base class until ``stop()``."""
        settings = self.settings
        key = settings.api_key.get_secret_value() if settings.api_key else None
        app = create_app(self.state, api_key=key, max_body_bytes=settings.max_body_bytes,
                         body_timeout_s=settings.body_timeout_s, docs=settings.docs)
        self.http_port = free_port()
        http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.http_port, log_config=None,
                                             lifespan="off"))
        serving = asyncio.create_task(http.serve())
        while not http.started and not serving.done():
            await asyncio.sleep(0.02)
        try:
            await super()._serve()
        finally:
            http.should_exit = True
            await serving
