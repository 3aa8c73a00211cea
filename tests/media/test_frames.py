import numpy as np
import pytest
from PIL import Image
from perceiver_serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from perceiver_serve.media import MediaLimits, decode_frame_pair, rgb_frame_from_raw

from .samples import BLUE, RED, encode, rejected, solid

LIMITS = MediaLimits()


def test_frame_pair_of_different_formats_and_modes():
    first = encode(solid(RED, (32, 24)), "PNG")
    second = encode(solid(128, (32, 24), mode="L"), "JPEG", quality=100)
    frame1, frame2 = decode_frame_pair(first, second, LIMITS)
    for frame in (frame1, frame2):
        assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
        assert frame.flags.writeable
    assert (frame1 == RED).all()
    assert np.abs(frame2.astype(int) - 128).max() <= 1


def test_frames_of_different_sizes_name_both_sizes():
    with rejected(InvalidInput, "frame_size_mismatch", "frame1 is 320×240 but frame2 is 640×480"):
        decode_frame_pair(encode(solid(RED, (320, 240)), "PNG"), encode(solid(RED, (640, 480)), "PNG"), LIMITS)


def _turned(size: tuple[int, int], orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(solid(RED, size), fmt, exif=exif)


def test_frames_are_compared_upright():
    """A frame stored 64×48 with EXIF orientation 6 is 48×64 upright: it pairs with a 48×64 frame, and not
    with a 64×48 one (whose stored size matches: compared again once decoded)."""
    frame1, frame2 = decode_frame_pair(_turned((64, 48), 6), encode(solid(RED, (48, 64)), "PNG"), LIMITS)
    assert frame1.shape == frame2.shape == (64, 48, 3)
    with rejected(InvalidInput, "frame_size_mismatch", "frame1 is 48×64 but frame2 is 64×48 (upright"):
        decode_frame_pair(_turned((64, 48), 6), encode(solid(RED, (64, 48)), "PNG"), LIMITS)
    with rejected(InvalidInput, "frame_size_mismatch", "frame1 is 48×64 but frame2 is 64×48 (upright"):
        decode_frame_pair(_turned((64, 48), 6, "PNG"), encode(solid(RED, (64, 48)), "PNG"), LIMITS)


@pytest.mark.parametrize(
    ("first", "second", "error", "fragment"),
    [
        (b"nope", encode(solid(RED), "PNG"), UnsupportedMediaType, "frame1 is not an image"),
        (encode(solid(RED), "PNG"), b"", InvalidInput, "frame2 is empty"),
        (encode(solid(RED), "PNG"), encode(solid(RED), "PNG")[:40], InvalidInput, "frame2 (PNG) is corrupt"),
    ],
)
def test_errors_name_the_frame(first, second, error, fragment):
    with rejected(error, error.code, fragment):
        decode_frame_pair(first, second, LIMITS)


def test_raw_rgb24_frame_is_reshaped_row_major():
    data = bytes(range(2 * 3 * 3))
    frame = rgb_frame_from_raw(data, 2, 3, LIMITS)
    assert frame.shape == (2, 3, 3) and frame.dtype == np.uint8
    assert frame[1, 0].tolist() == [9, 10, 11]
    frame[0, 0] = BLUE  # an array of its own, not a view of the request bytes


def test_raw_frame_length_must_match_its_dimensions():
    with rejected(InvalidInput, "invalid_input", "frame has 17 bytes, but a 3×2 RGB24 frame has 18"):
        rgb_frame_from_raw(bytes(17), 2, 3, LIMITS)


@pytest.mark.parametrize(("height", "width"), [(0, 3), (3, 0), (-2, -2)])
def test_raw_frame_dimensions_must_be_positive(height, width):
    with rejected(InvalidInput, "invalid_input", f"frame is {width}×{height}; each side must be at least 1 px"):
        rgb_frame_from_raw(b"", height, width, LIMITS)


def test_raw_frame_pixel_limit_is_checked_before_the_length():
    with rejected(
        PayloadTooLarge, "too_large", "frame1 is 10000×5000, which has 50000000 pixels; the limit is 40000000"
    ):
        rgb_frame_from_raw(b"\x00", 5000, 10000, LIMITS, field="frame1")
