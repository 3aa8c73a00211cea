"""The server process: REST (uvicorn) and gRPC on their ports, models loading behind them, graceful drain.

Models load in a background thread while the HTTP port is already up, so liveness answers at
once and readiness turns 200 when every model is warm. SIGTERM/SIGINT start a drain:
readiness turns 503, the listener closes, in-flight requests finish (up to the grace
period), queued model work completes, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import uvicorn

from .api.grpc import GrpcServer
from .allocator import fix_mmap_threshold
from .api.rest import ServerState, create_app
from .engine import ModelRegistry, ModelRepository
from .media.image import allow_pixels
from .metrics import Metrics
from .settings import Settings
from .tasks.common import configure_preprocess_pool

log = logging.getLogger("perceiver_serve")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this process coordinates shutdown itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_state(settings: Settings) -> ServerState:
    allow_pixels(settings.max_image_pixels)
    metrics = Metrics()
    repository = ModelRepository.scan(settings.model_repository)
    registry = ModelRegistry(repository, observer=metrics, progress=log.info)
    return ServerState(registry, metrics, settings.media_limits())


async def serve(settings: Settings) -> int:
    fix_mmap_threshold(int(settings.malloc_mmap_threshold_mb * 1024 * 1024))
    configure_preprocess_pool(settings.preprocess_threads)
    state = build_state(settings)
    app = create_app(
        state,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        max_body_bytes=settings.max_body_bytes,
        docs=settings.docs,
    )
    http = _Uvicorn(uvicorn.Config(
        app, host=settings.host, port=settings.http_port, http=settings.http_parser, log_config=None, lifespan="off",
        timeout_graceful_shutdown=settings.grace_period_s,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    ))
    grpc_server = GrpcServer(state, settings) if settings.grpc_port >= 0 else None

    drain_deadline: float | None = None  # one grace period for both ports, counted from the signal

    def drain(signum: int) -> None:
        nonlocal drain_deadline
        if drain_deadline is None:  # a second signal does not extend the grace period
            drain_deadline = time.monotonic() + settings.grace_period_s
        log.info("received %s: draining (grace period %.0f s)", signal.Signals(signum).name, settings.grace_period_s)
        state.draining = True  # readiness 503, gRPC health NOT_SERVING, new RPCs UNAVAILABLE
        http.should_exit = True  # the REST listener closes; in-flight requests finish

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, drain, signum)

    loading = asyncio.create_task(asyncio.to_thread(state.registry.load_all))
    scheme = "https" if settings.tls_cert else "http"
    log.info("REST on %s://%s:%d (model repository %s)", scheme, settings.host, settings.http_port,
             settings.model_repository)
    try:
        if grpc_server is not None:
            await grpc_server.start()
        await http.serve()
    finally:
        state.draining = True
        if grpc_server is not None:
            deadline = drain_deadline or time.monotonic() + settings.grace_period_s
            await grpc_server.stop(max(deadline - time.monotonic(), 0.0))
        await loading
        await asyncio.to_thread(state.registry.stop, settings.grace_period_s)
        log.info("stopped")
    return 0
