"""Test videos made with PyAV: a moving pattern with a tone, in the container and codecs asked for."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_pattern(index: int, height: int, width: int) -> np.ndarray:
    """A diagonal gradient sliding right, so every frame differs from the last."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x * 4 + index * 6) % 256
    frame[..., 1] = (y * 4) % 256
    frame[..., 2] = ((x + y) * 2 + index * 3) % 256
    return frame


def make_clip(path: Path, *, seconds: float = 3.0, fps: int = 30, height: int = 72, width: int = 96,
              video_codec: str = "libx264", audio_codec: str | None = "aac", sample_rate: int = 44_100,
              channels: int = 2, pix_fmt: str = "yuv420p") -> Path:
    frames = round(seconds * fps)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        audio = None
        if audio_codec is not None:
            audio = container.add_stream(audio_codec, rate=sample_rate, layout="stereo" if channels == 2 else "mono")
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(moving_pattern(index, height, width), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            t = np.arange(round(seconds * sample_rate)) / sample_rate
            tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            planes = np.stack([tone] * channels)
            for start in range(0, planes.shape[1], 4096):
                sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start:start + 4096]),
                                                   format="fltp", layout="stereo" if channels == 2 else "mono")
                sound.sample_rate = sample_rate
                sound.pts, sound.time_base = start, Fraction(1, sample_rate)
                container.mux(audio.encode(sound))
            container.mux(audio.encode(None))
    return path


if __name__ == "__main__":  # examples/clip.mp4, the README's input: python -m tests.client.clips examples/clip.mp4
    import sys

    make_clip(Path(sys.argv[1]), seconds=3.0, fps=30, height=180, width=240)
