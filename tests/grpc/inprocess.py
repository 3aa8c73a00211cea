"""The gRPC front end in the test process, so tests can watch the engine while a client talks to it.

The server runs on its own event loop in a thread (as in the real process, the event loop
never runs model code); tests use the blocking grpc client from the main thread and read
``served.runner.decoded_chunks`` and the metrics directly.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from perceiver_serve.api.grpc import GrpcServer
from perceiver_serve.api.state import ServerState
from perceiver_serve.server import build_state
from perceiver_serve.settings import Settings

from ..reactive import reactive_models

VIDEO_OPTIONS = """
chunks_per_window = 8
sample_rate = 1600
fps = 25
max_undelivered_chunks = 4
max_frames_per_stream = 64
"""


def write_repository(root: Path, *names: str) -> Path:
    """Reactive test models (by default the video and text ones), the video one with a small frame limit."""
    for name in names or ("video-autoencoder", "text-sentiment"):
        source = reactive_models() / name
        text = (source / "model.toml").read_text()
        text = text.replace('source = "checkpoint"', f'source = "{source / "checkpoint"}"')
        if name == "video-autoencoder":  # the others keep their own options (the digits model's crop_size)
            text = text.split("[options]")[0] + "[options]\n" + VIDEO_OPTIONS
        (root / name).mkdir(parents=True)
        (root / name / "model.toml").write_text(text)
    return root


class InProcessServer:
    """``GrpcServer`` over a registry in this process; ``load=False`` leaves every model loading."""

    def __init__(self, settings: Settings, load: bool = True) -> None:
        self.settings = settings
        self.state: ServerState = build_state(settings)
        self.port: int | None = None
        self._load = load
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="grpc-test-server", daemon=True)

    def start(self) -> "InProcessServer":
        if self._load:
            self.state.registry.load_all()
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = GrpcServer(self.state, self.settings)
        try:
            self.port = await server.start()
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            raise
        finally:
            self._ready.set()
        await self._stop.wait()
        await server.stop(1.0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.state.registry.stop(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def served(self, name: str):
        return self.state.registry.models[name]

    def tasks_named(self, qualname: str) -> int:
        """How many tasks on the server's event loop run a coroutine function of this ``__qualname__``."""
        async def count() -> int:
            return sum(1 for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") == qualname)

        return asyncio.run_coroutine_threadsafe(count(), self._loop).result(30)

    def metric(self, name: str, labels: dict[str, str]) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value
