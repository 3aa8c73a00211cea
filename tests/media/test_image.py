import warnings

import numpy as np
import pytest
from perceiver_serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from perceiver_serve.media import IMAGE_FORMATS, MediaLimits, decode_image, open_image
from PIL import Image

from .samples import BLUE, GREEN, RED, WHITE, animation, encode, patched, png_with_header, rejected, solid

LIMITS = MediaLimits()


def pixels(picture: Image.Image) -> np.ndarray:
    assert picture.mode == "RGB"
    return np.asarray(picture).astype(int)


def assert_colour(picture: Image.Image, colour: tuple[int, int, int], tolerance: int = 0) -> None:
    assert np.abs(pixels(picture) - colour).max() <= tolerance, np.unique(pixels(picture).reshape(-1, 3), axis=0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_loaded_rgb(fmt):
    picture = decode_image(encode(solid(RED, (8, 6)), fmt), LIMITS)
    assert picture.size == (8, 6)
    assert_colour(picture, RED, tolerance=2)


def test_supported_formats_are_listed():
    assert IMAGE_FORMATS == ("PNG", "JPEG", "GIF", "WebP", "BMP", "TIFF")


def test_one_by_one_is_a_valid_image():
    assert decode_image(encode(solid(BLUE, (1, 1)), "PNG"), LIMITS).size == (1, 1)


def test_empty_bytes_are_invalid():
    with rejected(InvalidInput, "invalid_input", "image is empty"):
        decode_image(b"", LIMITS)


@pytest.mark.parametrize(
    "data",
    [b"hello, world", b"%PDF-1.7\n", encode(solid(RED), "ICO"), encode(solid(RED), "PPM"), b"<svg></svg>"],
    ids=["text", "pdf", "ico", "ppm", "svg"],
)
def test_non_images_and_other_formats_are_unsupported(data):
    with rejected(UnsupportedMediaType, "unsupported_media_type", "frame1 is not an image in a supported format (PNG"):
        decode_image(data, LIMITS, field="frame1")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF"])
def test_truncated_files_are_invalid_and_name_their_format(fmt):
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), fmt)
    with rejected(InvalidInput, "invalid_input", "frame2 ("):
        decode_image(data[: len(data) // 2], LIMITS, field="frame2")


def test_corrupt_header_is_invalid():
    data = bytearray(encode(solid(RED), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: its checksum no longer matches
    with rejected(InvalidInput, "invalid_input", "image (PNG) is corrupt or truncated"):
        decode_image(bytes(data), LIMITS)


def test_zero_sized_image_is_invalid():
    with rejected(InvalidInput, "invalid_input", "image (PNG)"):
        decode_image(png_with_header(0, 5), LIMITS)


def test_sides_below_the_minimum_are_invalid():
    with rejected(InvalidInput, "invalid_input", "image is 4×3; each side must be at least 8 px"):
        decode_image(encode(solid(RED, (4, 3)), "PNG"), MediaLimits(min_image_side=8))


def test_more_bytes_than_the_limit_is_too_large():
    data = encode(solid(RED), "BMP")
    with rejected(PayloadTooLarge, "too_large", f"image is {len(data)} bytes; the limit is 100 bytes"):
        decode_image(data, MediaLimits(max_image_bytes=100))


def test_more_pixels_than_the_limit_is_too_large():
    with rejected(PayloadTooLarge, "too_large", "image is 20×10, which has 200 pixels; the limit is 199"):
        decode_image(encode(solid(RED, (20, 10)), "PNG"), MediaLimits(max_image_pixels=199))


@pytest.mark.parametrize(
    "data",
    [
        png_with_header(30_000, 30_000),
        patched(encode(solid(RED, (1, 1)), "GIF"), 6, "<HH", 30_000, 30_000),  # logical screen size
        patched(encode(solid(RED, (1, 1)), "BMP"), 18, "<ii", 30_000, 30_000),  # DIB header size
    ],
    ids=["png", "gif", "bmp"],
)
def test_huge_header_is_rejected_from_the_header_alone(data):
    # The files hold a few bytes of pixel data: only the header can have been read.
    with rejected(
        PayloadTooLarge, "too_large", "image is 30000×30000, which has 900000000 pixels; the limit is 40000000"
    ):
        decode_image(data, LIMITS)


def test_pillow_bomb_guard_is_a_payload_error(monkeypatch):
    # WebP checks Pillow's global limit while opening, before our own check can run.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with rejected(PayloadTooLarge, "too_large", "image (WebP) is too large to decode safely"):
        decode_image(encode(solid(RED, (8, 8)), "WEBP"), LIMITS)


def test_pillow_bomb_warning_turned_error_is_a_payload_error(monkeypatch):
    # TIFF warns (between 1× and 2× Pillow's limit) when it allocates its tile.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with rejected(PayloadTooLarge, "too_large", "image (TIFF) is too large to decode safely"):
            decode_image(encode(solid(RED, (8, 8)), "TIFF"), LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_give_their_first_frame(fmt):
    assert_colour(decode_image(animation(fmt), LIMITS), RED, tolerance=2)


def test_exif_orientation_is_applied():
    # Stored 64 wide × 32 high, red left and blue right; orientation 6 says "rotate 90° clockwise to view".
    stored = Image.new("RGB", (64, 32), RED)
    stored.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = pixels(decode_image(encode(stored, "JPEG", quality=95, exif=exif), LIMITS))
    assert upright.shape == (64, 32, 3)
    assert np.abs(upright[8, 16] - RED).max() < 20  # stored left is now on top
    assert np.abs(upright[56, 16] - BLUE).max() < 20


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_a_broken_exif_block_is_ignored(fmt):
    """Metadata that does not parse leaves the picture as stored, as browsers show it: its pixels are fine."""
    assert_colour(decode_image(encode(solid(RED), fmt, exif=b"garbage!!", **({"quality": 100} if fmt != "PNG" else {})),
                               LIMITS), RED, tolerance=3)


def _tiled_tiff(tile: int) -> bytes:
    """A 64 × 64 zlib-compressed TIFF in 16 px tiles whose header then claims ``tile`` px tiles."""
    import io
    import struct

    tifffile = pytest.importorskip("tifffile")
    out = io.BytesIO()
    tifffile.imwrite(out, np.zeros((64, 64), np.uint8), tile=(16, 16), compression="zlib")
    data = bytearray(out.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (322, 323):  # TileWidth, TileLength
            data[entry + 8:entry + (10 if kind == 3 else 12)] = struct.pack("<H" if kind == 3 else "<I", tile)
    return bytes(data)


def test_tiff_tiles_beyond_the_pixel_limit_are_refused_from_the_header():
    """libtiff allocates a whole tile's buffer: 4.6 KB claiming 46,000 px square tiles asked for 2 GiB."""
    with rejected(PayloadTooLarge, "too_large", "stored in tiles of 46000×46000"):
        open_image(_tiled_tiff(46000), LIMITS)


def test_decoded_bytes_count_tile_buffers_and_row_pointers():
    plain = open_image(encode(solid(0, (64, 64), mode="L"), "PNG"), LIMITS).decoded_bytes
    assert open_image(_tiled_tiff(1024), LIMITS).decoded_bytes == plain + 1024 * 1024  # one byte a pixel
    thin = open_image(encode(solid(0, (1, 100_000), mode="L"), "PNG"), LIMITS).decoded_bytes
    wide = open_image(encode(solid(0, (100_000, 1), mode="L"), "PNG"), LIMITS).decoded_bytes
    assert thin - wide == (100_000 - 1) * 8 * 2  # a pointer a row, for the picture and its RGB copy


def test_cmyk_jpeg_is_converted_to_rgb():
    assert_colour(decode_image(encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG"), LIMITS), RED, tolerance=2)


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_high_bit_depth_integers_keep_their_top_eight_bits(mode, fmt):
    picture = decode_image(encode(solid(0x9A7F, mode=mode), fmt), LIMITS)
    assert_colour(picture, (0x9A, 0x9A, 0x9A))


def test_32_bit_integers_beyond_16_bits_are_clipped():
    assert_colour(decode_image(encode(solid(1 << 20, mode="I"), "TIFF"), LIMITS), WHITE)


@pytest.mark.parametrize(
    ("value", "grey"), [(0.25, 64), (0.0, 0), (1.0, 255), (7.5, 255), (-1.0, 0), (float("nan"), 0)]
)
def test_float_samples_are_read_as_zero_to_one(value, grey):
    assert_colour(decode_image(encode(solid(value, mode="F"), "TIFF"), LIMITS), (grey, grey, grey))


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_grey_rgb(mode):
    picture = Image.new(mode, (4, 4), 0)
    picture.putpixel((1, 1), 255)
    rgb = pixels(decode_image(encode(picture, "PNG"), LIMITS))
    assert (rgb[1, 1] == 255).all() and (rgb[0, 0] == 0).all()


def test_palette_transparency_is_composited_onto_white():
    picture = Image.new("P", (4, 4), 0)
    picture.putpalette([*RED, *GREEN] + [0] * 762)
    picture.putpixel((0, 0), 1)
    rgb = pixels(decode_image(encode(picture, "PNG", transparency=0), LIMITS))
    assert (rgb[0, 0] == GREEN).all()
    assert (rgb[3, 3] == WHITE).all()  # transparent red shows the background


@pytest.mark.parametrize(
    ("mode", "colour", "fmt", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), "PNG", WHITE),
        ("RGBA", (255, 0, 0, 255), "PNG", RED),
        ("RGBA", (0, 0, 0, 128), "PNG", (127, 127, 127)),
        ("RGBA", (0, 0, 255, 0), "WEBP", WHITE),
        ("LA", (0, 128), "PNG", (127, 127, 127)),
        ("PA", (0, 0), "TIFF", WHITE),
    ],
)
def test_alpha_is_composited_onto_white(mode, colour, fmt, expected):
    assert_colour(decode_image(encode(solid(colour, mode=mode), fmt), LIMITS), expected, tolerance=1)


def test_result_is_independent_of_the_input_bytes():
    picture = decode_image(encode(solid(RED), "PNG"), LIMITS)
    picture.putpixel((0, 0), BLUE)  # loaded and writable: no file is behind it
    assert picture.getpixel((0, 0)) == BLUE


def test_pillow_guard_follows_a_larger_pixel_limit_and_never_drops(monkeypatch):
    from perceiver_serve.media.image import allow_pixels

    default = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", default)
    allow_pixels(default // 2)
    assert Image.MAX_IMAGE_PIXELS == default
    allow_pixels(default * 3)
    assert Image.MAX_IMAGE_PIXELS == default * 3
