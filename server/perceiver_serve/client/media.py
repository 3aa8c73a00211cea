"""Video files in and out, with PyAV (its wheels bundle FFmpeg, so any container or codec it reads).

In: the video resampled to the model's frame rate (each output instant shows the input
frame on screen then), centre-cropped square and resized to its frame size; the audio mixed
to mono and resampled to its rate; both cut into the model's windows. Out: an MP4 (H.264 +
AAC) written beside its final name and moved there only when complete, so an interrupted or
failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np

from .errors import InputError
from .video import VideoGeometry, VideoPiece

# Rates AAC can carry; the model's own rate (1,600 Hz for the demo model) may not be one.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading; whatever FFmpeg cannot read becomes one clear :class:`InputError`."""
    try:
        with av.open(str(path)) as container:
            yield container
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a video FFmpeg can read ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class InputVideo:
    """A video file's streams, checked at once so a bad file fails before anything is sent or written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with _decoding(self.path) as container:
            if not container.streams.video:
                raise InputError(f"{self.path}: has no video stream")
            stream = container.streams.video[0]
            self.has_audio = bool(container.streams.audio)
            self.frame_rate = float(stream.average_rate or stream.guessed_rate or 25)
            self.duration = (container.duration / av.time_base) if container.duration else None

    def frames(self, size: int, fps: float) -> Iterator[np.ndarray]:
        """``(size, size, 3)`` uint8 frames at ``fps``: as many as the input's duration holds at that rate."""
        step = 1.0 / self.frame_rate
        shown: np.ndarray | None = None
        start = end = None
        emitted = 0
        with _decoding(self.path) as container:
            for frame in _decoded(self.path, container.decode(video=0)):
                time = frame.time if frame.time is not None else (end or 0.0)
                start = time if start is None else start
                time -= start
                while shown is not None and emitted / fps < time - 1e-6:  # instants before this frame
                    yield shown
                    emitted += 1
                shown = _square(frame, size)
                end = time + step
        if shown is None:
            raise InputError(f"{self.path}: its video stream has no frames")
        while emitted < max(1, round(end * fps)):
            yield shown
            emitted += 1

    def audio(self, rate: int) -> Iterator[np.ndarray]:
        """Mono float32 samples at ``rate``, in pieces as they are decoded.

        Channels are averaged, as the server averages raw multichannel audio (FFmpeg's own
        downmix would raise a centred sound by 3 dB).
        """
        resampler = av.AudioResampler(format="flt", rate=rate)  # packed: channels interleaved
        with _decoding(self.path) as container:
            for frame in _decoded(self.path, container.decode(audio=0)):
                for out in resampler.resample(frame):
                    yield _mono(out)
            for out in resampler.resample(None):
                yield _mono(out)

    def frame_count(self, fps: float) -> int | None:
        """How many frames the video has at ``fps``, when the container says how long it is."""
        return None if self.duration is None else round(self.duration * fps)

    def windows(self, geometry: VideoGeometry) -> int | None:
        """How many windows the stream will have, when the container says how long it is."""
        frames = self.frame_count(geometry.fps)
        return None if frames is None else max(1, math.ceil(frames / geometry.frames_per_window))

    def pieces(self, geometry: VideoGeometry) -> Iterator[VideoPiece]:
        """One piece per window: its frames and exactly their audio (none when the file has none)."""
        per_frame = geometry.audio_samples_per_window // geometry.frames_per_window
        frames = self.frames(geometry.frame_size, geometry.fps)
        audio = _Samples(self.audio(geometry.sample_rate)) if self.has_audio else None
        while batch := list(islice(frames, geometry.frames_per_window)):
            yield batch, None if audio is None else audio.take(len(batch) * per_frame)


def _decoded(path: Path, frames: Iterator) -> Iterator:
    try:
        yield from frames
    except av.FFmpegError as exc:
        raise InputError(f"{path}: cannot be decoded ({_reason(exc)})") from None


def _mono(frame: av.AudioFrame) -> np.ndarray:
    channels = len(frame.layout.channels)
    return frame.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float32)


def _square(frame: av.VideoFrame, size: int) -> np.ndarray:
    """Centre-crop square and resize, as the server does with frames of another size."""
    rgb = frame.to_ndarray(format="rgb24")
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(rgb[top:top + side, left:left + side])
    if side == size:
        return square
    picture = av.VideoFrame.from_ndarray(square, format="rgb24")
    return picture.reformat(width=size, height=size, interpolation="BILINEAR").to_ndarray()


class _Samples:
    """Takes exact sample counts out of a stream of pieces; silence once the stream runs out."""

    def __init__(self, pieces: Iterator[np.ndarray]) -> None:
        self.pieces = pieces
        self.buffer = np.zeros(0, np.float32)

    def take(self, count: int) -> np.ndarray:
        parts, have = [self.buffer], len(self.buffer)
        while have < count and (piece := next(self.pieces, None)) is not None:
            parts.append(piece)
            have += len(piece)
        samples = np.concatenate(parts)
        if len(samples) < count:
            samples = np.concatenate([samples, np.zeros(count - len(samples), np.float32)])
        self.buffer = samples[count:]
        return samples[:count]


class OutputVideo:
    """An MP4 being written: H.264 video at the model's frame size and rate, AAC mono audio."""

    def __init__(self, path: str | os.PathLike, height: int, width: int, fps: float, sample_rate: int) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.sample_rate = sample_rate
        self.container = av.open(str(self.partial), "w", format="mp4")
        try:
            self.video = self.container.add_stream("libx264", rate=self.rate)
            self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
            self.video.options = {"crf": "12", "preset": "fast"}
            audio_rate = next((r for r in AAC_RATES if r >= sample_rate), AAC_RATES[-1])
            self.audio = self.container.add_stream("aac", rate=audio_rate, layout="mono")
        except BaseException:
            self.discard()
            raise
        self.frames = 0

    def write(self, frames: np.ndarray, audio: np.ndarray) -> None:
        """Frames ``(T, H, W, 3)`` float in [0, 1] scale (clipped here) and their mono audio."""
        pixels = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
        for picture in pixels:
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = self.frames, 1 / self.rate
            self.container.mux(self.video.encode(frame))
            self.frames += 1
        if len(audio):
            sound = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1).astype(np.float32)[None, :], format="flt",
                                               layout="mono")
            sound.sample_rate = self.sample_rate
            self.container.mux(self.audio.encode(sound))

    def commit(self) -> None:
        try:
            self.container.mux(self.video.encode(None))
            self.container.mux(self.audio.encode(None))
            self.container.close()
        except BaseException:
            self.discard()
            raise
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        self.partial.unlink(missing_ok=True)
