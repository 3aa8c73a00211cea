"""Real media files made on the spot with Pillow, soundfile and numpy."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile
from perceiver_serve.errors import ServeError
from PIL import Image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(picture: Image.Image, fmt: str, **params: object) -> bytes:
    stream = io.BytesIO()
    picture.save(stream, format=fmt, **params)
    return stream.getvalue()


def solid(colour: tuple[int, ...] | int | float, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def animation(fmt: str, colours: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE)) -> bytes:
    first, *rest = (solid(colour) for colour in colours)
    return encode(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` but whose IDAT holds a single byte."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """``data`` with ``values`` packed by ``fmt`` written over the bytes at ``offset``."""
    replacement = struct.pack(fmt, *values)
    return data[:offset] + replacement + data[offset + len(replacement) :]


def sound(samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    stream = io.BytesIO()
    soundfile.write(stream, samples, rate, format=fmt, subtype=subtype)
    return stream.getvalue()


def tone(seconds: float = 0.1, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    """A 440 Hz sine at half scale, ``(frames,)`` or ``(frames, channels)`` float32."""
    wave = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
    return wave if channels == 1 else np.repeat(wave[:, None], channels, axis=1)


@contextmanager
def rejected(error: type[ServeError], code: str, fragment: str) -> Iterator[None]:
    """The block raises exactly ``error`` with ``code`` and a message containing ``fragment``."""
    with pytest.raises(error) as caught:
        yield
    assert type(caught.value) is error
    assert caught.value.code == code
    assert fragment in caught.value.message, caught.value.message
