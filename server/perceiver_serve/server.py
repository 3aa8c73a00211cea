"""The server process: both ports bound, then models loading behind them, then a graceful drain.

Both ports are bound before any model loads, so a busy port fails the start at once (exit
code :data:`EXIT_PORT_BUSY`) instead of after minutes of loading. Models then load in a
background thread while the ports are up: liveness answers at once and readiness turns 200
when every model is warm; one summary line says how many became ready and why the others
failed. SIGTERM/SIGINT start a drain: readiness turns 503, the listener closes, in-flight
requests finish (up to the grace period), queued model work completes, and the process exits
0. A second signal during the drain quits at once with ``128 + signal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

import uvicorn

from .allocator import trim_heap
from .api.grpc import GrpcServer
from .api.rest import create_app
from .api.state import ServerState
from .engine import ModelRegistry, ModelRepository
from .engine.polling import RepositoryPoller
from .engine.registry import FAILED, READY
from .errors import PortUnavailable
from .media.budget import DecodeBudget
from .engine.devices import cuda_unavailable_reason
from .media.image import allow_pixels
from .metrics import Metrics
from .modeling.threads import serve_single_threaded
from .settings import Settings
from .tasks import TASKS
from .tasks.common import configure_preprocess_pool

log = logging.getLogger("perceiver_serve")

# Exit codes besides 0 (drained and stopped) and 2 (invalid flags or model repository); the
# command's --help lists them too.
EXIT_PORT_BUSY = 3
EXIT_MODEL_FAILED = 4
EXIT_NO_GPU = 5


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this process coordinates shutdown itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_state(settings: Settings) -> ServerState:
    allow_pixels(settings.max_image_pixels)
    metrics = Metrics()
    repository = ModelRepository.scan(settings.model_repository, TASKS)  # the engine learns the tasks here
    registry = ModelRegistry(repository, observer=metrics, progress=log.info, load_only=settings.models_at_start())
    budget = DecodeBudget(settings.max_decode_bytes, on_change=metrics.observe_decode_bytes,
                          on_reject=metrics.observe_rejected, hand_back=trim_heap,
                          hand_back_from_bytes=int(settings.malloc_mmap_threshold_mb * 1024 * 1024) or 32 * 1024 * 1024)
    return ServerState(registry, metrics, settings.media_limits(), budget)


def bind_rest_socket(host: str, port: int) -> socket.socket:
    """The REST listening socket, bound now so that a busy port is known before anything loads.

    Its connections send without Nagle's delay (TCP_NODELAY). asyncio sets that on a connection only
    when its socket says its protocol is TCP, and ``socket.create_server`` leaves the protocol 0: each
    answer, written as a head and a body, then waited for the client's delayed ACK of the head,
    40 ms on Linux (GET /health/live took 44 ms on loopback; a batch-1 text classification 64 ms
    against 15).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it
        if family == socket.AF_INET6:  # IPv6 only, as socket.create_server makes it
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise PortUnavailable(f"cannot listen for REST on {host}:{port}: {exc.strerror or exc}") from None
    return listener


def startup_summary(registry: ModelRegistry, endpoints: str) -> tuple[int, str]:
    """The log level and text of the one line that ends start-up."""
    models = registry.models.values()
    ready = sum(m.state == READY for m in models)
    line = f"{ready}/{len(models)} models ready, serving {endpoints}"
    failed = [m for m in models if m.state == FAILED]
    if not failed:
        return logging.INFO, line
    reasons = "; ".join(f"{m.name}: {m.reason}" for m in failed)
    return logging.ERROR, f"{line}; failed: {reasons}"


async def serve(settings: Settings) -> int:
    """Run until drained; the process exit code (:data:`EXIT_MODEL_FAILED` with ``--strict`` and a failed model).

    The process's allocator is its starter's to set, before torch is imported (``cli.main`` calls
    :func:`~.allocator.configure_allocator`)."""
    serve_single_threaded()  # only the device workers compute with several threads (see modeling.threads)
    configure_preprocess_pool(settings.preprocess_threads)
    state = build_state(settings)
    if settings.require_gpu and (stranded := state.registry.gpu_models_on_cpu()):
        log.error("--require-gpu: models %s ask for a GPU, and CUDA is not available here: %s",
                  ", ".join(stranded), cuda_unavailable_reason())
        return EXIT_NO_GPU
    app = create_app(
        state,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        admin_key=settings.admin_key.get_secret_value() if settings.admin_key else None,
        model_control=settings.model_control != "none",
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        docs=settings.docs,
    )
    http = _Uvicorn(uvicorn.Config(
        app, host=settings.host, port=settings.http_port, http=settings.http_parser, log_config=None, lifespan="off",
        timeout_graceful_shutdown=settings.grace_period_s, timeout_keep_alive=settings.keep_alive_s,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    ))
    rest_socket = bind_rest_socket(settings.host, settings.http_port)
    grpc_server = GrpcServer(state, settings) if settings.grpc_port >= 0 else None
    try:
        if grpc_server is not None:
            await grpc_server.start()
    except PortUnavailable:
        rest_socket.close()
        raise
    scheme = "https" if settings.tls_cert else "http"
    endpoints = f"REST on {scheme}://{settings.host}:{rest_socket.getsockname()[1]}"
    log.info("%s (model repository %s)", endpoints, settings.model_repository)
    if grpc_server is not None:
        endpoints += f", gRPC on {settings.host}:{grpc_server.port}"

    drain_deadline: float | None = None  # one grace period for both ports, counted from the signal
    exit_code = 0

    def drain(signum: int) -> None:
        nonlocal drain_deadline
        name = signal.Signals(signum).name
        if drain_deadline is not None:  # the second signal: the operator does not want to wait
            log.warning("received %s again while draining: quitting now", name)
            _exit_now(128 + signum)
        drain_deadline = time.monotonic() + settings.grace_period_s
        log.info("received %s: draining (grace period %.0f s; %s again quits at once)", name,
                 settings.grace_period_s, name)
        state.draining = True  # readiness 503, gRPC health NOT_SERVING, new RPCs UNAVAILABLE
        http.should_exit = True  # the REST listener closes; in-flight requests finish

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, drain, signum)

    async def load() -> None:
        nonlocal exit_code
        await asyncio.to_thread(state.registry.load_all)
        level, line = startup_summary(state.registry, endpoints)
        log.log(level, line)
        if settings.strict and level != logging.INFO:
            log.error("--strict: stopping because a model failed to load")
            exit_code = EXIT_MODEL_FAILED
            state.draining = True
            http.should_exit = True
        elif poller is not None and not state.draining:
            poller.start()
            log.info("following the model repository on disk (every %.1f s)", settings.repository_poll_s)

    poller = RepositoryPoller(state.registry, settings.repository_poll_s) if settings.model_control == "poll" else None
    loading = asyncio.create_task(load())
    try:
        await http.serve(sockets=[rest_socket])
    finally:
        state.draining = True
        if grpc_server is not None:
            deadline = drain_deadline or time.monotonic() + settings.grace_period_s
            await grpc_server.stop(max(deadline - time.monotonic(), 0.0))
        await loading
        if poller is not None:
            await asyncio.to_thread(poller.stop)
        running = await asyncio.to_thread(state.registry.stop, settings.grace_period_s)
        if running:
            # A batch still computing (its requests already answered 503 when uvicorn's grace ran out) cannot be
            # interrupted; the interpreter's exit would tear down torch's thread pools under it and abort the
            # process (SIGABRT, "terminate called without an active exception"). Leave without that teardown.
            log.warning("stopped: the grace period ran out with %s still computing; exiting without waiting for "
                        "them", ", ".join(running))
            _exit_now(exit_code)
        log.info("stopped")
    return exit_code


def _exit_now(code: int) -> None:
    """End the process at once with ``code``, its log written out first (no interpreter teardown)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
