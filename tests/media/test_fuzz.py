"""Whatever the bytes, decoders return clean arrays or raise one of the three input errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from perceiver_serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from perceiver_serve.media import (
    MediaLimits,
    decode_audio,
    decode_frame_pair,
    decode_image,
    from_flo,
    pcm_from_f32le,
    to_flo,
)
from PIL import Image

from .samples import animation, encode, solid, sound, tone

# Malformed files are expected to make Pillow and libtiff warn; only exceptions matter here.
pytestmark = pytest.mark.filterwarnings("ignore")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Small limits keep a mutated header from making an example decode a big (but legal) picture.
LIMITS = MediaLimits(max_image_pixels=256 * 256, max_audio_seconds=2.0)
RATE = 16_000
INPUT_ERRORS = (InvalidInput, PayloadTooLarge, UnsupportedMediaType)


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(solid((10, 20, 30), (16, 8)), "JPEG", exif=exif)


NOISE = Image.effect_noise((16, 16), 60).convert("RGB")
IMAGES = [
    *(encode(NOISE, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")),
    *(animation(fmt) for fmt in ("GIF", "WEBP", "PNG")),
    _exif_jpeg(),
    encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"),
    encode(solid(0x1234, mode="I;16"), "PNG"),
    encode(solid(0.5, mode="F"), "TIFF"),
    encode(solid(1, mode="P"), "PNG", transparency=1),
]
SOUNDS = [
    sound(tone(0.02)),
    sound(tone(0.02, channels=2), subtype="FLOAT"),
    sound(tone(0.02), fmt="FLAC"),
    sound(tone(0.02), fmt="OGG"),
]
FLO = [to_flo(np.arange(24, dtype=np.float32).reshape(3, 4, 2))]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid file with a few bytes flipped, the tail cut off, or junk inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "truncate", "insert"]))
        if edit == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def untrusted(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), mutated(seeds))


def assert_clean_audio(samples: np.ndarray) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0


@FUZZ
@given(untrusted(IMAGES))
def test_decode_image(data):
    try:
        picture = decode_image(data, LIMITS)
    except INPUT_ERRORS:
        return
    assert picture.mode == "RGB" and 1 <= picture.width * picture.height <= LIMITS.max_image_pixels


@FUZZ
@given(untrusted(IMAGES), untrusted(IMAGES))
def test_decode_frame_pair(first, second):
    try:
        frame1, frame2 = decode_frame_pair(first, second, LIMITS)
    except INPUT_ERRORS:
        return
    assert frame1.shape == frame2.shape and frame1.shape[2] == 3 and frame1.dtype == frame2.dtype == np.uint8


@FUZZ
@given(untrusted(SOUNDS))
def test_decode_audio(data):
    try:
        samples = decode_audio(data, LIMITS, sample_rate=RATE)
    except INPUT_ERRORS:
        return
    assert_clean_audio(samples)


@FUZZ
@given(st.binary(max_size=256), st.integers(1, 3))
def test_pcm_from_f32le(data, channels):
    try:
        samples = pcm_from_f32le(data, LIMITS, sample_rate=RATE, channels=channels)
    except INPUT_ERRORS:
        return
    assert_clean_audio(samples)


@FUZZ
@given(untrusted(FLO))
def test_from_flo(data):
    try:
        flow = from_flo(data)
    except INPUT_ERRORS:
        return
    assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2


# -- the valid inputs the fuzzing starts from must decode: a decoder refusing everything fails here --

@pytest.mark.parametrize("data", IMAGES, ids=range(len(IMAGES)))
def test_every_seed_image_decodes(data):
    picture = decode_image(data, LIMITS)
    assert picture.mode == "RGB" and picture.width * picture.height > 0
    frame1, frame2 = decode_frame_pair(data, data, LIMITS)
    assert frame1.shape == frame2.shape == (picture.height, picture.width, 3)
    assert np.array_equal(frame1, np.asarray(picture))


@pytest.mark.parametrize("data", SOUNDS, ids=range(len(SOUNDS)))
def test_every_seed_sound_decodes(data):
    samples = decode_audio(data, LIMITS, sample_rate=RATE)
    assert_clean_audio(samples)
    assert np.abs(samples).max() > 0.01  # the tone, not silence


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_valid_pcm_decodes(channels):
    frames = np.linspace(-0.5, 0.5, 96, dtype=np.float32)
    samples = pcm_from_f32le(np.repeat(frames, channels).astype("<f4").tobytes(), LIMITS, sample_rate=RATE,
                             channels=channels)
    np.testing.assert_allclose(samples, frames, rtol=1e-6)


def test_the_seed_flow_decodes():
    (data,) = FLO
    assert np.array_equal(from_flo(data), np.arange(24, dtype=np.float32).reshape(3, 4, 2))
