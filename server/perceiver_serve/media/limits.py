"""How much untrusted media the server agrees to decode.

The limits exist so that one request can never make the server allocate or compute
without bound: every decoder checks them against headers *before* it decodes samples or
pixels. Server settings build one :class:`MediaLimits` from flags and pass it down.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MiB = 1024 * 1024
# The decode budget (--max-decode-mb): on a 24 GiB machine, room for models and their
# batches beside it, and for about twenty full-size images (40 M pixels) decoding at once.
DEFAULT_DECODE_MB = 4096
DEFAULT_DECODE_BYTES = DEFAULT_DECODE_MB * MiB


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Upper bounds (and the one lower bound) on decoded media.

    The defaults admit any ordinary photo (40 MP is a 7700×5200 image) and a few minutes of
    audio, while keeping one decoded image under ~160 MB even at 32 bits per pixel.
    """

    max_image_bytes: int = 20 * MiB
    max_image_pixels: int = 40_000_000
    # Sides below this are rejected: a model cannot crop or resize a 0-pixel image.
    min_image_side: int = 1
    max_audio_bytes: int = 50 * MiB
    max_audio_seconds: float = 120.0
    # Bounds the memory of an interleaved read before channels are mixed down.
    max_audio_channels: int = 8
    # Enforced by the video pipeline, which counts frames as they arrive.
    max_video_frames: int = 1024

    def __post_init__(self) -> None:
        # A zero or negative limit is a configuration mistake, not a client error: fail at startup.
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"MediaLimits.{field.name} must be positive, got {getattr(self, field.name)!r}")
