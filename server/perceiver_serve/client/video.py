"""The ``ReconstructVideo`` stream from the client's side: send windows, reassemble what comes back.

The server answers ``started`` (the model's geometry), then for each window its chunks (each
a range of the window's flattened ``frames × height × width`` pixels and of its audio) and
finally its labels. :class:`WindowAssembler` puts a window's chunks back together, so a caller
gets whole windows, trimmed to their real frames when the last one was padded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from ..answers import Prediction
from ..pb.perceiver.v1 import perceiver_pb2 as pb
from .errors import PerceiverError
from .grpc_transport import GrpcTransport, grpc_error

# One window's worth of input: RGB frames (H, W, 3) uint8 of one size, and the mono float32
# audio that goes with them at the model's sample rate (None for a stream without audio).
VideoPiece = tuple[Sequence[np.ndarray], "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class VideoGeometry:
    """What a stream must carry: windows of ``frames_per_window`` square frames and their audio."""

    frame_size: int               # frames are centre-cropped square and resized to this many pixels a side
    frames_per_window: int
    audio_samples_per_window: int  # mono, at sample_rate
    sample_rate: int
    fps: float                    # the frame rate the model was trained on
    max_frames: int | None = None  # the longest stream the model takes (None: a server that doesn't say)

    @classmethod
    def of(cls, geometry: Mapping[str, Any]) -> "VideoGeometry":
        """From a video model's ``geometry`` in ``GET /models`` or ``ListModels`` (numbers may come as floats)."""
        height, width = (int(side) for side in geometry["frame_size"])
        if height != width:
            raise PerceiverError("unsupported_model", f"the model's frames are {width}×{height}, not square")
        frames = int(geometry["frames_per_window"])
        longest = geometry.get("max_frames_per_stream")
        return cls(height, frames, frames * int(geometry["audio_samples_per_frame"]), int(geometry["sample_rate"]),
                   float(geometry["fps"]), None if longest is None else int(longest))


@dataclasses.dataclass(frozen=True)
class StreamStarted:
    model: str
    frames: int            # output frames per window
    height: int
    width: int
    audio_samples_per_window: int
    sample_rate: int
    chunks_per_window: int


@dataclasses.dataclass(frozen=True)
class VideoChunk:
    window: int
    chunk: int
    padded: bool
    pixel_start: int
    rgb: np.ndarray        # (pixels, 3) float32 in the model's [0, 1] scale, not clipped
    audio_start: int
    audio: np.ndarray      # (samples,) float32


@dataclasses.dataclass(frozen=True)
class WindowLabels:
    window: int
    predictions: list[Prediction]
    real_frames: int
    padded: bool


StreamEvent = StreamStarted | VideoChunk | WindowLabels


@dataclasses.dataclass(frozen=True)
class ReconstructedWindow:
    index: int
    frames: np.ndarray     # (real_frames, height, width, 3) float32 in [0, 1] scale
    audio: np.ndarray      # (real_frames × samples per frame,) float32
    labels: WindowLabels


def _event(message: pb.ReconstructVideoResponse) -> StreamEvent:
    kind = message.WhichOneof("kind")
    if kind == "started":
        s = message.started
        return StreamStarted(s.model, s.grid.frames, s.grid.height, s.grid.width, s.audio_samples_per_window,
                             s.sample_rate, s.chunks_per_window)
    if kind == "chunk":
        c = message.chunk
        return VideoChunk(c.window, c.chunk, c.padded, c.pixel_start, np.frombuffer(c.rgb, "<f4").reshape(-1, 3),
                          c.audio_start, np.frombuffer(c.audio, "<f4"))
    labels = message.labels
    predictions = [Prediction(label=p.label, index=p.index, score=p.score) for p in labels.predictions]
    return WindowLabels(labels.window, predictions, labels.real_frames, labels.padded)


def _media(piece: VideoPiece, sample_rate: int) -> pb.ReconstructVideoRequest:
    frames, audio = piece
    message = pb.MediaPiece(frames=[
        pb.Frame(raw=pb.RawFrame(height=f.shape[0], width=f.shape[1], rgb=np.ascontiguousarray(f).tobytes()))
        for f in frames])
    if audio is not None:
        message.audio.raw.CopyFrom(pb.RawAudio(pcm_f32le=np.asarray(audio, "<f4").tobytes(), sample_rate=sample_rate))
    return pb.ReconstructVideoRequest(media=message)


async def _aiter(pieces: Iterable[VideoPiece] | AsyncIterable[VideoPiece]) -> AsyncIterator[VideoPiece]:
    """Pieces from either kind of iterable; a blocking one (a decoder) is stepped in a thread."""
    if isinstance(pieces, AsyncIterable):
        async for piece in pieces:
            yield piece
        return
    iterator = iter(pieces)
    end = object()
    while (piece := await asyncio.to_thread(next, iterator, end)) is not end:
        yield piece


async def stream_events(transport: GrpcTransport, pieces: Iterable[VideoPiece] | AsyncIterable[VideoPiece], *,
                        model: str | None = None, chunks_per_window: int | None = None,
                        top_k: int | None = None, timeout: float | None = None) -> AsyncIterator[StreamEvent]:
    """Every message of one stream, as events; media is sent once the server has said its sample rate.

    Each piece goes out as one message with its frames and their audio together, so the
    server never has to guess whether audio is still coming for a window.
    """
    started = asyncio.get_running_loop().create_future()
    failed: list[BaseException] = []  # the pieces' own failure (a file that stops decoding) wins

    async def requests() -> AsyncIterator[pb.ReconstructVideoRequest]:
        yield pb.ReconstructVideoRequest(config=pb.StreamConfig(model=model or "", chunks_per_window=chunks_per_window,
                                                                top_k=top_k))
        sample_rate = await started
        try:
            async for piece in _aiter(pieces):
                yield _media(piece, sample_rate)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            failed.append(exc)
            call.cancel()

    loop = asyncio.get_running_loop()
    ends = None if timeout is None else loop.time() + timeout
    call = transport.stub.ReconstructVideo(requests(), metadata=transport.metadata, timeout=timeout)
    try:
        async for message in call:
            event = _event(message)
            if isinstance(event, StreamStarted):
                started.set_result(event.sample_rate)
            yield event
    except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
        if failed:
            raise failed[0] from None
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise grpc_error(exc, transport.connection.grpc_address,
                         deadline_passed=ends is not None and loop.time() >= ends) from None
    finally:
        call.cancel()  # a no-op once finished; otherwise the server stops decoding


class WindowAssembler:
    """Collects each window's chunks; hands back the whole window when its labels arrive."""

    def __init__(self, started: StreamStarted) -> None:
        self.started = started
        self.pixels = started.frames * started.height * started.width
        self.rgb: np.ndarray | None = None
        self.audio: np.ndarray | None = None

    def add(self, event: VideoChunk | WindowLabels) -> ReconstructedWindow | None:
        s = self.started
        if self.rgb is None:
            self.rgb = np.zeros((self.pixels, 3), np.float32)
            self.audio = np.zeros(s.audio_samples_per_window, np.float32)
        if isinstance(event, VideoChunk):
            self.rgb[event.pixel_start:event.pixel_start + len(event.rgb)] = event.rgb
            self.audio[event.audio_start:event.audio_start + len(event.audio)] = event.audio
            return None
        frames = self.rgb.reshape(s.frames, s.height, s.width, 3)[:event.real_frames]
        samples = s.audio_samples_per_window * event.real_frames // s.frames
        window = ReconstructedWindow(event.window, frames, self.audio[:samples], event)
        self.rgb = self.audio = None
        return window


async def reconstruct_windows(events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamStarted | ReconstructedWindow]:
    """``started`` first, then each window whole, in order."""
    assembler: WindowAssembler | None = None
    async with contextlib.aclosing(events):  # closing this early closes (cancels) the stream too
        async for event in events:
            if isinstance(event, StreamStarted):
                assembler = WindowAssembler(event)
                yield event
            elif assembler is None:
                raise PerceiverError("protocol_error", "the server sent a chunk before the stream started")
            elif (window := assembler.add(event)) is not None:
                yield window
