"""``ReconstructVideo``: stream messages adapted to and from :func:`..tasks.video.reconstruct`.

The task does the work — windows, one encode each, chunked decoding, bounded buffering,
stopping when the consumer goes away. This module decodes each media message off the event
loop into the task's ``(frames, audio)`` pieces and writes each chunk and label event to the
client the moment the task yields it; ``context.write`` waits for gRPC flow control, so a
client that stops reading stops the task's consumer, and the task's bounded queue then stops
the decoding. A client that reads nothing, or sends nothing, for the model's
``max_stream_idle_s`` has its stream ended (DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from ...engine import ServedModel
from ...errors import DeadlineExceeded, InvalidInput, InvalidRequest
from ...media import OpenedImage, open_audio, open_image, pcm_from_f32le, rgb_frame_from_raw
from ...media.budget import DecodeBudget
from ...media.limits import MediaLimits
from ...media.resample import StreamResampler
from ...modeling import PerceiverForMultimodalAutoencoding
from ...pb.perceiver.v1 import perceiver_pb2 as pb
from ...tasks.common import decode_in_budget, off_loop
from ...tasks.video import (VIDEO_AUTOENCODING, AudioMode, Chunk, Frame, VideoOptions, WindowLabels,
                            check_stream_length, model_frame, reconstruct, stream_settings)
from ..state import ServerState
from .calls import RpcCall
from .messages import fields_of

Piece = tuple[list[Frame], np.ndarray | None]
AUDIO_MODES = {pb.StreamConfig.AUDIO_MAY_FOLLOW: AudioMode.MAY_FOLLOW, pb.StreamConfig.AUDIO_FOLLOWS: AudioMode.FOLLOWS,
               pb.StreamConfig.NO_AUDIO: AudioMode.NONE}


async def reconstruct_video(state: ServerState, requests: AsyncIterator[pb.ReconstructVideoRequest],
                            call: RpcCall) -> None:
    first = await anext(requests, None)
    if first is None or first.WhichOneof("kind") != "config":
        raise InvalidRequest("the stream's first message must carry its config", code="no_config")
    fields = fields_of(first.config)
    if fields["audio"] not in AUDIO_MODES:  # proto3 enums are open: any number arrives
        known = ", ".join(f"{pb.StreamConfig.AudioMode.Name(value)} ({value})" for value in AUDIO_MODES)
        raise InvalidRequest(f"config.audio = {fields['audio']} is not one of {known}")
    fields["audio"] = AUDIO_MODES[fields["audio"]]
    request = VIDEO_AUTOENCODING.parse(fields)
    served = call.resolve(state.registry, VIDEO_AUTOENCODING.name, request.model, request.version or "")
    options: VideoOptions = served.runner.options
    settings = stream_settings(request, options)
    model: PerceiverForMultimodalAutoencoding = served.model
    config = model.config
    grid = pb.VideoGrid(frames=config.output_shape[1], height=config.output_shape[2], width=config.output_shape[3])
    idle_s = options.max_stream_idle_s
    await _write(call, pb.ReconstructVideoResponse(started=pb.StreamStarted(
        model=served.name, grid=grid, audio_samples_per_window=config.num_frames * config.audio_samples_per_frame,
        sample_rate=options.sample_rate, chunks_per_window=settings.chunks_per_window)), idle_s)
    pieces = media_pieces(requests, MediaDecoder(served, state.limits, state.budget, call.deadline()))
    async with contextlib.aclosing(reconstruct(served, settings, pieces)) as events:
        async for event in events:
            await _write(call, event_message(event, grid), idle_s)


@contextlib.asynccontextmanager
async def _idle_bound(idle_s: float, stalled: str, advice: str) -> AsyncIterator[None]:
    """Ends the stream (DEADLINE_EXCEEDED) when the wait inside takes more than ``idle_s`` seconds.

    A client that stops sending, or stops reading (its window full), without closing or
    cancelling its stream would otherwise hold the stream, its model copy and its backlog for as
    long as it stays connected. The wait stays in the handler's own task, the one gRPC cancels
    to end the RPC (``asyncio.wait_for`` would move it to another).
    """
    try:
        async with asyncio.timeout(idle_s):
            yield
    except TimeoutError:
        raise DeadlineExceeded(f"{stalled} for {idle_s:g} s (the model's max_stream_idle_s): the stream is "
                               f"ended; {advice}") from None


async def _write(call: RpcCall, message: pb.ReconstructVideoResponse, idle_s: float) -> None:
    """Writes a reply, waiting for gRPC flow control at most ``idle_s`` seconds."""
    async with _idle_bound(idle_s, "the client read nothing", "read replies as they come"):
        await call.context.write(message)


class MediaDecoder:
    """Decodes one stream's media for its model, each frame reduced to the model's size as it is decoded."""

    def __init__(self, served: ServedModel, limits: MediaLimits, budget: DecodeBudget,
                 deadline: float | None) -> None:
        self.served = served
        self.limits = limits
        self.budget = budget
        self.deadline = deadline
        self.options: VideoOptions = served.runner.options
        self.size: int = served.model.config.image_size
        self.resampler = StreamResampler(self.options.sample_rate)

    async def frame(self, frame: pb.Frame, index: int) -> Frame:
        """One frame at the model's size; only it is ever decoded at full size, and under the budget."""
        field = f"frame {index}"
        kind = frame.WhichOneof("data")
        if kind == "raw":  # its pixels are the message's own bytes: nothing to inflate
            raw = frame.raw
            return await off_loop(lambda: model_frame(
                rgb_frame_from_raw(raw.rgb, raw.height, raw.width, self.limits, field=field), self.size))
        if kind != "encoded":
            raise InvalidInput(f"{field} carries no picture: set encoded or raw")

        def at_model_size(opened: OpenedImage) -> Frame:
            rgb = np.asarray(opened.decode())
            width, height = opened.size  # as sent, upright
            return model_frame(rgb, self.size, sent=(height, width))

        return await decode_in_budget(
            self.served, self.budget, lambda: open_image(frame.encoded, self.limits, field=field, min_side=self.size),
            at_model_size, subject=field, deadline=self.deadline)

    async def audio(self, audio: pb.Audio) -> np.ndarray:
        """Mono float32 samples at the model's rate, from a file or from raw PCM that states its rate.

        Audio at another rate is resampled; pieces are decoded one after another, so the
        stream's resampler sees them in order.
        """
        kind = audio.WhichOneof("data")
        if kind == "encoded":
            return await decode_in_budget(
                self.served, self.budget, lambda: open_audio(audio.encoded, self.limits, sample_rate=None),
                lambda opened: self.resampler(opened.decode(), opened.rate), subject="audio", deadline=self.deadline)
        if kind != "raw":
            raise InvalidInput("audio carries no samples: set raw or encoded")
        raw = audio.raw
        if not raw.sample_rate:
            raise InvalidInput(f"raw audio does not state its sample_rate (this model takes {self.options.sample_rate} "
                               "Hz; other rates are resampled)")
        return await off_loop(lambda: self.resampler(
            pcm_from_f32le(raw.pcm_f32le, self.limits, sample_rate=raw.sample_rate, channels=raw.channels or 1),
            raw.sample_rate))


async def media_pieces(requests: AsyncIterator[pb.ReconstructVideoRequest],
                       decoder: MediaDecoder) -> AsyncIterator[Piece]:
    """The task's ``(frames, audio)`` pieces, one per media message, decoded one item at a time.

    A message's frame count is checked against the stream's limit before any of them is
    decoded; messages name each frame by its index in the stream.
    """
    frames_seen = 0
    while (message := await _next_message(requests, decoder.options.max_stream_idle_s)) is not None:
        kind = message.WhichOneof("kind")
        if kind != "media":
            raise InvalidRequest("only the stream's first message carries config; later ones carry media"
                                 if kind == "config" else "a stream message carries neither config nor media")
        piece = message.media
        check_stream_length(decoder.options, frames_seen + len(piece.frames))
        frames = [await decoder.frame(frame, index) for index, frame in enumerate(piece.frames, start=frames_seen)]
        frames_seen += len(frames)
        audio = await decoder.audio(piece.audio) if piece.HasField("audio") else None
        yield frames, audio
    held_back = decoder.resampler.flush()
    if len(held_back):
        yield [], held_back


async def _next_message(requests: AsyncIterator[pb.ReconstructVideoRequest],
                        idle_s: float) -> pb.ReconstructVideoRequest | None:
    """The stream's next message (None at its end), waited for at most ``idle_s`` seconds."""
    async with _idle_bound(idle_s, "the stream sent nothing", "send the next message sooner, or close it when done"):
        return await anext(requests, None)


def _f32le(values: np.ndarray | None) -> bytes:
    return b"" if values is None else np.ascontiguousarray(values, dtype="<f4").tobytes()


def event_message(event: Chunk | WindowLabels, grid: pb.VideoGrid) -> pb.ReconstructVideoResponse:
    if isinstance(event, WindowLabels):
        return pb.ReconstructVideoResponse(labels=pb.WindowLabels(
            window=event.window, real_frames=event.real_frames, padded=event.padded,
            predictions=[pb.Prediction(label=p.label, index=p.index, score=p.score) for p in event.predictions]))
    rgb, audio = event.image_rgb, event.audio
    return pb.ReconstructVideoResponse(chunk=pb.VideoChunk(
        window=event.window, chunk=event.chunk, padded=event.padded, grid=grid,
        pixel_start=event.image_start, pixel_count=0 if rgb is None else len(rgb), rgb=_f32le(rgb),
        audio_start=event.audio_start, audio_count=0 if audio is None else len(audio), audio=_f32le(audio)))
