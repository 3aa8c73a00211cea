"""``AsyncClient`` and ``Client``: the calls of perceiver-serve as typed methods.

``AsyncClient`` is the one implementation. ``Client`` runs it on an event loop in a
background thread and waits for each result, so the blocking API behaves exactly like the
async one (retries, deadlines, errors) and an interrupted wait (Ctrl-C) cancels the call,
which for the video stream stops the server's decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from ..answers import ClassificationResponse, FillMaskResponse, Health, ModelList
from .connection import Connection
from .errors import InputError, PerceiverError
from .files import Reconstruction, reconstruct_file
from .grpc_transport import GrpcTransport
from .rest_transport import RestTransport
from .video import (ReconstructedWindow, StreamEvent, StreamStarted, VideoGeometry, VideoPiece, reconstruct_windows,
                    stream_events)

T = TypeVar("T")
P = ParamSpec("P")

VIDEO_TASK = "video-autoencoding"
CANCEL_WAIT_S = 10.0  # how long an interrupted call may take to cancel (and tell the server)
ImageInput = bytes | str | os.PathLike


def _read(data: ImageInput) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        with open(data, "rb") as file:
            return file.read()
    except OSError as exc:
        raise InputError(f"{os.fspath(data)}: {exc.strerror}") from None


class AsyncClient:
    """One server; REST for unary calls (gRPC with ``use_grpc=True``), gRPC for the video stream.

    Keyword arguments are those of :class:`Connection`. Use it as an async context manager,
    or call :meth:`aclose`.
    """

    def __init__(self, url: str = Connection.url, **options: Any) -> None:
        self.connection = Connection(url=url, **options)
        self._rest: RestTransport | None = None
        self._grpc: GrpcTransport | None = None

    # Transports are made on first use, inside the event loop that will drive them.
    @property
    def grpc(self) -> GrpcTransport:
        if self._grpc is None:
            self._grpc = GrpcTransport(self.connection)
        return self._grpc

    @property
    def _unary(self) -> RestTransport | GrpcTransport:
        if self.connection.use_grpc:
            return self.grpc
        if self._rest is None:
            self._rest = RestTransport(self.connection)
        return self._rest

    async def aclose(self) -> None:
        for transport in (self._rest, self._grpc):
            if transport is not None:
                await transport.aclose()
        self._rest = self._grpc = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- unary calls ---------------------------------------------------------------------------
    async def classify_text(self, texts: str | Sequence[str], *, top_k: int | None = None, model: str | None = None,
                            return_logits: bool = False) -> ClassificationResponse:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return await self._unary.classify_text(texts, top_k, model, return_logits)

    async def fill_mask(self, text: str, *, mask_spans: Sequence[tuple[int, int]] | None = None,
                        top_k: int | None = None, model: str | None = None, truncate: bool = False) -> FillMaskResponse:
        spans = [tuple(span) for span in mask_spans] if mask_spans is not None else None
        return await self._unary.fill_mask(text, spans, top_k, model, truncate)

    async def classify_image(self, image: ImageInput, *, top_k: int | None = None, model: str | None = None,
                             return_logits: bool = False) -> ClassificationResponse:
        return await self._unary.classify_image(_read(image), top_k, model, return_logits)

    async def estimate_flow(self, frame1: ImageInput, frame2: ImageInput, *, model: str | None = None) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 in pixels: u (right) then v (down) for each pixel of frame1."""
        return await self._unary.estimate_flow(_read(frame1), _read(frame2), model)

    async def flow_file(self, frame1: ImageInput, frame2: ImageInput, fmt: str, *, model: str | None = None) -> bytes:
        """The flow encoded by the server (``npy``, ``flo``, ``png``, ``json``); REST only."""
        rest = self._rest or RestTransport(self.connection)
        self._rest = rest
        return await rest.flow_file(_read(frame1), _read(frame2), fmt, model)

    async def list_models(self) -> ModelList:
        return await self._unary.list_models()

    async def health(self) -> Health:
        return await self._unary.health()

    async def video_geometry(self, model: str | None = None) -> tuple[str, VideoGeometry]:
        """The video model a stream would use (``model``, or the default) and what it needs."""
        models = await self.list_models()
        name = model or models.defaults.get(VIDEO_TASK)
        if name is None:
            raise PerceiverError("no_model_for_task", f"the server has no {VIDEO_TASK} model")
        found = next((m for m in models.models if m.name == name), None)
        if found is None or found.task != VIDEO_TASK:
            raise PerceiverError("model_not_found", f"the server has no {VIDEO_TASK} model named {name!r}")
        if found.geometry is None:
            why = f"it is {found.state}" + (f": {found.reason}" if found.reason else "")
            raise PerceiverError("not_ready", f"model {name!r} cannot stream yet ({why})")
        return name, VideoGeometry.of(found.geometry)

    # -- the video stream ----------------------------------------------------------------------
    async def reconstruct_video(self, pieces: Iterable[VideoPiece] | AsyncIterable[VideoPiece], *,
                                model: str | None = None, chunks_per_window: int | None = None,
                                top_k: int | None = None, windows: bool = True, timeout: float | None = None
                                ) -> AsyncIterator[StreamStarted | ReconstructedWindow | StreamEvent]:
        """Stream ``pieces`` (frames with their audio) to ``ReconstructVideo``.

        Yields :class:`StreamStarted`, then each :class:`ReconstructedWindow` whole; with
        ``windows=False``, every chunk and label message as it arrives. Closing the iterator
        early cancels the call. A stream lasts as long as its video, so it has no deadline
        unless ``timeout`` (seconds, for the whole stream) sets one.
        """
        events = stream_events(self.grpc, pieces, model=model, chunks_per_window=chunks_per_window, top_k=top_k,
                               timeout=timeout)
        stream = reconstruct_windows(events) if windows else events
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item


def _blocking(method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate["Client", P], T]:
    """``Client``'s version of an ``AsyncClient`` method: run on the client's loop, waited for."""
    @functools.wraps(method)
    def call(self: "Client", *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._async, *args, **kwargs))

    return call


async def _settle_leftovers() -> None:
    """Cancel and await the tasks grpc left on the loop: a stream whose server went away keeps its
    request pump pending, and a task destroyed pending at exit prints a warning after the
    client's own last word on stderr."""
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=CANCEL_WAIT_S)


class Client:
    """The blocking twin of :class:`AsyncClient`: same arguments, same methods, same results."""

    def __init__(self, url: str = Connection.url, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="perceiver-client", daemon=True)
        self._thread.start()
        self._async = AsyncClient(url, **options)
        self._running: asyncio.Task | None = None
        self.connection = self._async.connection

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        async def run() -> T:
            self._running = asyncio.current_task()
            try:
                return await work
            finally:
                self._running = None

        try:
            return asyncio.run_coroutine_threadsafe(run(), self._loop).result()
        except BaseException:  # KeyboardInterrupt too, wherever it landed: cancel the call, let it wind down
            asyncio.run_coroutine_threadsafe(self._cancel_running(), self._loop).result(CANCEL_WAIT_S)
            raise

    async def _cancel_running(self) -> None:
        """Cancel the call in flight, if any, and wait until it has finished (and told the server).

        Scheduled after it, this runs after the call's first step even when the interrupt came
        while the call was being handed to the loop.
        """
        task = self._running
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.aclose())
            self._run(_settle_leftovers())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The unary calls are AsyncClient's, run to completion: same signatures, same documentation.
    classify_text = _blocking(AsyncClient.classify_text)
    fill_mask = _blocking(AsyncClient.fill_mask)
    classify_image = _blocking(AsyncClient.classify_image)
    estimate_flow = _blocking(AsyncClient.estimate_flow)
    flow_file = _blocking(AsyncClient.flow_file)
    list_models = _blocking(AsyncClient.list_models)
    health = _blocking(AsyncClient.health)
    video_geometry = _blocking(AsyncClient.video_geometry)

    def reconstruct_file(self, source: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> Reconstruction:
        """Reconstruct a video file (any container FFmpeg reads) into an MP4; see :func:`.files.reconstruct_file`."""
        return reconstruct_file(self, source, output, **kwargs)

    def reconstruct_video(self, pieces: Iterable[VideoPiece], **kwargs: Any
                          ) -> Iterator[StreamStarted | ReconstructedWindow | StreamEvent]:
        """See :meth:`AsyncClient.reconstruct_video`; leaving the loop early cancels the call."""
        stream = self._async.reconstruct_video(pieces, **kwargs)
        try:
            while True:
                try:
                    yield self._run(anext(stream))
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())
