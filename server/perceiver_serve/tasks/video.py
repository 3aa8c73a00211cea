"""Multimodal autoencoding of a video stream: windows encoded once, decoded chunk by chunk.

Frames (any size; centre-cropped square and resized to the model's frame size) and audio
arrive in pieces. Every ``num_frames`` frames with their audio form a window. Each window is
encoded once; its output queries (every pixel of every frame, every audio patch) are split
into ``chunks_per_window`` chunks, decoded one after another and handed to the consumer as
soon as each exists, then the window's top-k labels (the label input is always masked, as
in the released model, which makes the autoencoder a video classifier). A trailing partial
window is padded (last frame repeated, audio with silence) and marked so.

At most ``max_undelivered_chunks`` decoded chunks wait for a slow consumer; when it goes
away, decoding stops (pending work is dropped from the batcher before it runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..engine import ServedModel
from ..engine.batcher import REQUEST_FAILED
from ..errors import InvalidInput, PayloadTooLarge
from ..modeling import PerceiverForMultimodalAutoencoding, video_frames
from .common import DEFAULT_TOP_K, Prediction, TaskOptions, TopK, classification
from .definition import RequestSchema, Task

MAX_CHUNKS_PER_WINDOW = 4096


class VideoOptions(TaskOptions):
    chunks_per_window: int = Field(16, ge=1, le=MAX_CHUNKS_PER_WINDOW, description="Default decode chunks per window.")
    sample_rate: int = Field(48_000, ge=1, description="Audio sample rate the model was trained on.")
    fps: float = Field(25.0, gt=0, description="Frame rate the model was trained on (documentation).")
    max_undelivered_chunks: int = Field(4, ge=1, le=64, description="Decoded chunks buffered per stream.")
    max_frames_per_stream: int = Field(16 * 64, ge=1, description="Longest stream accepted, in frames.")
    max_stream_idle_s: float = Field(
        30.0, gt=0, le=3600,
        description="Longest wait for a stream's next message, or for its client to read a reply; a stream "
                    "stalled for longer is ended (DEADLINE_EXCEEDED), so that a stalled client holds no model copy.")


@dataclasses.dataclass(frozen=True)
class EncodeWindow:
    images: torch.Tensor  # (T, 3, S, S) in [0, 1]
    audio: torch.Tensor   # (T · samples_per_frame,) in [-1, 1]


@dataclasses.dataclass(frozen=True)
class DecodeChunk:
    latents: torch.Tensor          # (N, D), on the model's device
    image_points: torch.Tensor     # (P,) flat indices into the (T, H, W) output video
    audio_points: torch.Tensor     # (Pa,) audio patch indices
    label: bool = False


class VideoRunner:
    """Two kinds of work share one batcher: window encodes, and chunk decodes of equal size."""

    labelled = True  # each window's labels

    def __init__(self, model: PerceiverForMultimodalAutoencoding, options: VideoOptions) -> None:
        self.model = model
        self.options = options
        self.decoded_chunks = 0  # tests watch decoding stop when a stream is cancelled
        self._stacked: tuple[list[torch.Tensor], torch.Tensor] | None = None

    def geometry(self) -> dict[str, Any]:
        config = self.model.config
        return {"frame_size": [config.image_size, config.image_size], "frames_per_window": config.num_frames,
                "sample_rate": self.options.sample_rate, "audio_samples_per_frame": config.audio_samples_per_frame,
                "fps": self.options.fps, "max_frames_per_stream": self.options.max_frames_per_stream}

    def batch_key(self, payload: EncodeWindow | DecodeChunk) -> tuple:
        if isinstance(payload, EncodeWindow):
            return ("encode",)
        return ("decode", len(payload.image_points), len(payload.audio_points), payload.label)

    def run(self, payloads: Sequence[EncodeWindow | DecodeChunk]) -> list:
        if isinstance(payloads[0], EncodeWindow):
            return self._encode(payloads)
        return self._decode(payloads)

    def _encode(self, payloads: Sequence[EncodeWindow]) -> list[torch.Tensor]:
        device, dtype = self.model.device, self.model.dtype
        images = torch.stack([p.images for p in payloads]).to(device, dtype)
        audio = torch.stack([p.audio for p in payloads]).to(device, dtype)
        return list(self.model.encode(images, audio))

    def _stack_latents(self, payloads: Sequence[DecodeChunk]) -> torch.Tensor:
        """The batch's latents; the same tensor as last time for the same windows' latents, so the
        model's memo of prepared latents (which goes by identity) holds across a window's chunks."""
        sources = [p.latents for p in payloads]
        if self._stacked is not None:
            seen, stacked = self._stacked
            if len(seen) == len(sources) and all(a is b for a, b in zip(seen, sources)):
                return stacked
        stacked = torch.stack(sources)
        self._stacked = (sources, stacked)
        return stacked

    def _decode(self, payloads: Sequence[DecodeChunk]) -> list[dict[str, np.ndarray]]:
        latents = self._stack_latents(payloads)
        device = latents.device

        def points(name: str) -> torch.Tensor | None:
            rows = [getattr(p, name) for p in payloads]
            if not len(rows[0]):
                return None
            same = all(r is rows[0] or torch.equal(r, rows[0]) for r in rows)
            return (rows[0] if same else torch.stack(rows)).to(device)

        out = self.model.decode(latents, points("image_points"), points("audio_points"), label=payloads[0].label)
        self.decoded_chunks += len(payloads)
        host = {name: value.float().cpu().numpy() for name, value in out.items()}
        return [{name: value[i] for name, value in host.items()} for i in range(len(payloads))]

    def warmup_payloads(self) -> list[EncodeWindow | DecodeChunk]:
        """One window encode, one default-sized decode chunk and the labels' decode: every kind of
        batch a stream runs (the decode from zero latents of the encoder's shape)."""
        config, model = self.model.config, self.model
        size = config.image_size
        latents = torch.zeros(config.num_latents, config.d_latents, device=model.device, dtype=model.dtype)
        (i0, i1), (a0, a1) = (chunk_bounds(total, self.options.chunks_per_window)[0]
                              for total in (model.num_image_points, model.num_audio_points))
        empty = torch.zeros(0, dtype=torch.long)
        return [EncodeWindow(torch.zeros(config.num_frames, 3, size, size),
                             torch.zeros(config.num_frames * config.audio_samples_per_frame)),
                DecodeChunk(latents, torch.arange(i0, i1), torch.arange(a0, a1)),
                DecodeChunk(latents, empty, empty, label=True)]


# -- stream events ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Chunk:
    window: int
    chunk: int
    image_start: int              # flat index into the window's (T, H, W) output video
    image_rgb: np.ndarray | None  # (P, 3)
    audio_start: int              # first audio sample of this chunk within the window
    audio: np.ndarray | None      # (samples,)
    padded: bool                  # the window was completed with padding


@dataclasses.dataclass(frozen=True)
class WindowLabels:
    window: int
    predictions: list[Prediction]
    real_frames: int
    padded: bool


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame, already at the model's size: a stream never holds frames at the size they were sent."""

    size: tuple[int, int]  # (height, width) as sent: all frames of a stream share one
    pixels: torch.Tensor   # (3, S, S) in [0, 1]


def model_frame(rgb: np.ndarray, size: int, sent: tuple[int, int] | None = None) -> Frame:
    """An ``(H, W, 3)`` uint8 frame at the model's ``size``; ``sent`` is its size as sent if it was reduced."""
    return Frame(sent or rgb.shape[:2], video_frames(rgb[None], size)[0])


class AudioMode(enum.Enum):
    """What a stream's config declares about its audio; windows are cut from it, not from arrivals."""

    MAY_FOLLOW = "may_follow"  # windows wait for their audio; a stream ending with none is silent
    FOLLOWS = "follows"        # the same, and a stream ending without its audio is refused
    NONE = "none"              # windows are cut on frames alone; audio is refused


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    chunks_per_window: int
    image: bool = True
    audio: bool = True
    top_k: int = DEFAULT_TOP_K
    audio_mode: AudioMode = AudioMode.MAY_FOLLOW


def check_stream_length(options: VideoOptions, frames: int) -> None:
    """Refuse a stream of more than ``max_frames_per_stream`` frames; front ends call it before decoding them."""
    if frames > options.max_frames_per_stream:
        raise PayloadTooLarge(f"stream exceeds {options.max_frames_per_stream} frames (the model's "
                              f"max_frames_per_stream, {options.max_frames_per_stream / options.fps:g} s at its "
                              f"{options.fps:g} fps): send a longer video as several streams", code="too_many_frames")


class VideoStream:
    """Accumulates frames and audio of one stream into windows; validates as it goes."""

    def __init__(self, served: ServedModel, audio_mode: AudioMode = AudioMode.MAY_FOLLOW) -> None:
        self.served = served
        self.audio_mode = audio_mode
        config = served.model.config
        self.options: VideoOptions = served.runner.options
        self.frames_per_window = config.num_frames
        self.samples_per_frame = config.audio_samples_per_frame
        self.size = config.image_size
        self.frames: list[torch.Tensor] = []  # frames (3, S, S) not yet in a window
        self.audio = np.zeros(0, dtype=np.float32)
        self.frame_shape: tuple[int, int] | None = None
        self.total_frames = 0
        self.audio_seen = False
        self.windows_cut = 0

    def add_frames(self, frames: Sequence[Frame]) -> None:
        """Add frames at the model's size (all frames of a stream were sent at one size)."""
        check_stream_length(self.options, self.total_frames + len(frames))
        for frame in frames:
            if self.frame_shape is None:
                self.frame_shape = frame.size
            elif frame.size != self.frame_shape:
                raise InvalidInput(
                    f"frame {self.total_frames} is {frame.size[1]}×{frame.size[0]} but this stream's frames are "
                    f"{self.frame_shape[1]}×{self.frame_shape[0]}"
                )
            self.total_frames += 1
            self.frames.append(frame.pixels)

    def add_audio(self, samples: np.ndarray) -> None:
        """Add mono float32 samples at the model's sample rate."""
        if self.audio_mode is AudioMode.NONE:
            raise InvalidInput("this stream's config declares no audio (NO_AUDIO), but a message carries some",
                               code="unexpected_audio")
        self.audio_seen = True
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
        limit = (self.options.max_frames_per_stream + 1) * self.samples_per_frame
        if self.windows_cut * self.frames_per_window * self.samples_per_frame + len(self.audio) > limit:
            raise PayloadTooLarge("stream carries more audio than its frame limit allows", code="too_much_audio")

    def _window_audio(self, frames: int) -> np.ndarray:
        needed = self.frames_per_window * self.samples_per_frame
        take = self.audio[:needed]
        self.audio = self.audio[needed:]
        if len(take) < needed:
            take = np.concatenate([take, np.zeros(needed - len(take), dtype=np.float32)])
        return take

    def next_window(self, final: bool = False) -> tuple[EncodeWindow, int] | None:
        """The next complete window, or at the end of the stream the padded remainder.

        A window is complete when its frames have arrived and, unless the config declared no
        audio, its audio too: the order in which a client sends them does not matter.
        """
        needed_audio = self.frames_per_window * self.samples_per_frame
        have_audio = final or self.audio_mode is AudioMode.NONE or len(self.audio) >= needed_audio
        if len(self.frames) >= self.frames_per_window and have_audio:
            frames, self.frames = self.frames[: self.frames_per_window], self.frames[self.frames_per_window:]
            real = self.frames_per_window
        elif final and self.frames:
            frames, self.frames = self.frames, []
            real = len(frames)
            frames = frames + [frames[-1]] * (self.frames_per_window - real)
        else:
            return None
        self.windows_cut += 1
        return EncodeWindow(torch.stack(frames), torch.from_numpy(self._window_audio(real))), real

    def check_end(self) -> None:
        if self.total_frames == 0:
            raise InvalidInput("the stream carried no frames", code="no_frames")
        if self.audio_seen or self.audio_mode is AudioMode.FOLLOWS:
            expected = self.total_frames * self.samples_per_frame
            got = (self.windows_cut * self.frames_per_window * self.samples_per_frame) + len(self.audio)
            if abs(got - expected) > self.samples_per_frame:
                raise InvalidInput(
                    f"the stream's audio has {got} samples but its {self.total_frames} frames need {expected} "
                    f"({self.samples_per_frame} per frame at {self.options.sample_rate} Hz)", code="audio_length",
                )


def chunk_bounds(total: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, near-equal ``[start, end)`` ranges covering ``range(total)``."""
    edges = np.linspace(0, total, chunks + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


async def decode_window(served: ServedModel, window: EncodeWindow, index: int, real_frames: int,
                        settings: StreamSettings) -> AsyncIterator[Chunk | WindowLabels]:
    """Encode one window, then yield its chunks as they are decoded and finally its labels."""
    model: PerceiverForMultimodalAutoencoding = served.model
    batcher = served.batcher
    padded = real_frames < model.config.num_frames
    latents = await batcher.submit(window)
    image_bounds = chunk_bounds(model.num_image_points, settings.chunks_per_window)
    audio_bounds = chunk_bounds(model.num_audio_points, settings.chunks_per_window)
    spp = model.config.samples_per_patch
    empty = torch.zeros(0, dtype=torch.long)
    for number, ((i0, i1), (a0, a1)) in enumerate(zip(image_bounds, audio_bounds)):
        image_points = torch.arange(i0, i1) if settings.image else empty
        audio_points = torch.arange(a0, a1) if settings.audio else empty
        if not len(image_points) and not len(audio_points):
            continue
        out = await batcher.submit(DecodeChunk(latents, image_points, audio_points))
        yield Chunk(index, number, i0, out.get("image"), a0 * spp, out.get("audio"), padded)
    labels = await batcher.submit(DecodeChunk(latents, empty, empty, label=True))
    result = classification(labels["label"], model.config.id2label, settings.top_k, False)
    yield WindowLabels(index, result.predictions, real_frames, padded)


async def reconstruct(served: ServedModel, settings: StreamSettings,
                      pieces: AsyncIterator[tuple[list[Frame], np.ndarray | None]]
                      ) -> AsyncIterator[Chunk | WindowLabels]:
    """Stream chunks and labels for a stream of ``(frames, audio)`` pieces.

    Input is read concurrently with decoding, so windows are processed while the client is
    still sending; at most ``max_undelivered_chunks`` results wait for the consumer.
    """
    stream = VideoStream(served, settings.audio_mode)
    windows: asyncio.Queue = asyncio.Queue(maxsize=1)
    results: asyncio.Queue = asyncio.Queue(maxsize=served.runner.options.max_undelivered_chunks)
    end = object()

    async def read() -> None:
        try:
            async for frames, audio in pieces:
                stream.add_frames(frames)
                if audio is not None:
                    stream.add_audio(audio)
                while (window := stream.next_window()) is not None:
                    await windows.put(window)
            stream.check_end()
            while (window := stream.next_window(final=True)) is not None:
                await windows.put(window)
            await windows.put(end)
        except Exception as exc:  # noqa: BLE001 - a bad piece ends the stream at once, after what was delivered
            producer.cancel(msg=REQUEST_FAILED)
            await results.put(exc)

    async def produce() -> None:
        try:
            index = 0
            while (item := await windows.get()) is not end:
                window, real = item
                async for event in decode_window(served, window, index, real, settings):
                    await results.put(event)
                index += 1
            await results.put(end)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await results.put(exc)

    producer = asyncio.create_task(produce())
    reader = asyncio.create_task(read())
    try:
        while (event := await results.get()) is not end:
            if isinstance(event, Exception):
                raise event
            yield event
    finally:
        for task in (reader, producer):
            task.cancel()
        await asyncio.gather(reader, producer, return_exceptions=True)


class ReconstructVideoRequest(RequestSchema):
    """A stream's configuration; its media follows in pieces."""

    model: str | None = None
    chunks_per_window: int | None = Field(None, ge=1, le=MAX_CHUNKS_PER_WINDOW,
                                          description="Decode chunks per window; default: the model's option.")
    return_image: bool = True
    return_audio: bool = True
    top_k: TopK = DEFAULT_TOP_K
    audio: AudioMode = Field(AudioMode.MAY_FOLLOW, description="Whether audio comes with the frames.")


def stream_settings(request: ReconstructVideoRequest, options: VideoOptions) -> StreamSettings:
    return StreamSettings(request.chunks_per_window or options.chunks_per_window, image=request.return_image,
                          audio=request.return_audio, top_k=request.top_k, audio_mode=request.audio)


VIDEO_AUTOENCODING = Task(
    name="video-autoencoding",
    architectures=("PerceiverForMultimodalAutoencoding",),
    options=VideoOptions,
    runner=VideoRunner,
    request=ReconstructVideoRequest,
    v2_note="video reconstruction streams: use the perceiver.v1 ReconstructVideo RPC",
)
