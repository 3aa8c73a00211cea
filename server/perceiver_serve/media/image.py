"""Untrusted image bytes → RGB pictures, checked against :class:`MediaLimits` first.

Only PNG, JPEG, GIF, WebP, BMP and TIFF are read. The format is recognised from its
signature by us, and only that one Pillow plugin is handed the bytes, so no other parser
in Pillow ever sees client data, and a file that claims to be a PNG but is broken is told
apart from one that is not an image at all (400 vs 415).

The plugin class is opened directly rather than through ``Image.open`` so that our pixel
limit, with its message in the client's terms, is checked as soon as the header is read
and before any pixel is decoded. Pillow's own process-wide guard (``Image.MAX_IMAGE_PIXELS``)
stays in force underneath for the allocations plugins make while opening (a WebP canvas,
a GIF frame extent, a TIFF tile); when it fires, the client gets a 413 as well.

Every picture comes out as a fully loaded mode-``RGB`` image:

- animated GIF, WebP and APNG files, and multi-page TIFFs, give their first frame;
- the EXIF orientation is applied, so the picture is upright as a browser shows it;
- transparency (alpha, or a transparent palette entry) is composited onto white, the
  usual background of a page the picture was cut from, instead of leaking the colour
  under fully transparent pixels;
- 16-bit and 32-bit integer samples keep their top 8 bits (``>> 8``; 32-bit ones are
  taken to hold 16-bit values and clipped to them); 32-bit float samples are taken to be
  in [0, 1] (NaN as 0) and scaled to 0–255;
- CMYK and other colour spaces are converted with Pillow's built-in formulas (embedded
  ICC profiles are not applied).
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
from PIL import (
    BmpImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from .limits import MediaLimits
from .untrusted import check_byte_count, translated_errors

# Format name → (signature at the start of the file, the Pillow plugin class that reads it).
_FORMATS: dict[str, tuple[re.Pattern[bytes], type[ImageFile.ImageFile]]] = {
    "PNG": (re.compile(rb"\x89PNG\r\n\x1a\n"), PngImagePlugin.PngImageFile),
    "JPEG": (re.compile(rb"\xff\xd8\xff"), JpegImagePlugin.JpegImageFile),
    "GIF": (re.compile(rb"GIF8[79]a"), GifImagePlugin.GifImageFile),
    "WebP": (re.compile(rb"RIFF.{4}WEBP", re.DOTALL), WebPImagePlugin.WebPImageFile),
    "BMP": (re.compile(rb"BM"), BmpImagePlugin.BmpImageFile),
    "TIFF": (re.compile(rb"II[*+]\x00|MM\x00[*+]"), TiffImagePlugin.TiffImageFile),
}
IMAGE_FORMATS: tuple[str, ...] = tuple(_FORMATS)

_PILLOW_BOMB_GUARD = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WHITE = (255, 255, 255, 255)
# Bytes a pixel takes in Pillow's memory, by mode; every other mode takes 4.
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_TRANSPOSITIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Pillow keeps a pointer for each row of every picture it holds: a tall, thin picture (1 × 40,000,000
#: px) costs more in these than in its pixels.
_ROW_BYTES = 8
#: TIFF tags of a tiled file's tile size: libtiff's decoder allocates one tile's buffer from them.
_TILE_WIDTH, _TILE_LENGTH = 322, 323
# Reduce a picture to no less than this many times the side its processing resizes it to:
# resampling from there is indistinguishable from resampling the full picture (Pillow's
# ``reducing_gap`` of 3 makes the same trade).
REDUCING_GAP = 3


def allow_pixels(limit: int) -> None:
    """Keep Pillow's process-wide bomb guard no lower than the configured pixel limit.

    Otherwise a server configured for larger pictures than Pillow's default (about 89 million
    pixels) would still refuse them inside Pillow. The guard never drops below its default.
    """
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


@dataclasses.dataclass(eq=False)
class OpenedImage:
    """An upload whose header is read and checked against the limits, but no pixel decoded yet.

    Opening is cheap; :meth:`decode` is where the memory goes, and :attr:`decoded_bytes` says
    how much beforehand, so the caller can take that from the decode budget first.

    With ``min_side`` (a short side that holds every detail the caller's processing keeps), a
    JPEG is decoded at a reduced scale (``draft``) and any picture still larger is box-reduced
    right after decoding, its short side kept at least :data:`REDUCING_GAP` times
    ``min_side``: one full-size buffer exists only for the moment of decoding.
    """

    picture: ImageFile.ImageFile | None
    kind: str
    field: str
    min_side: int | None = None
    #: The pixels of the tile buffer the decoder allocates (a tiled TIFF's tile size; 0: none of its own).
    tile_pixels: int = 0
    size: tuple[int, int] = dataclasses.field(init=False)  # (width, height) as sent, upright once decoded

    def __post_init__(self) -> None:
        self.size = self.picture.size

    @property
    def decoded_bytes(self) -> int:
        """The most memory :meth:`decode` holds at once, from the header's size, pixel mode and tiles:
        the pictures' pixels, a pointer for each of their rows, and the decoder's tile buffer."""
        picture = self.picture
        stored = _STORAGE_BYTES.get(picture.mode, 4)
        per_pixel, copies = stored, 1
        if picture.mode != "RGB":
            per_pixel, copies = per_pixel + 4, copies + 1  # the RGB copy
        if picture.mode in _HIGH_DEPTH_MODES or _may_have_transparency(picture):
            per_pixel, copies = per_pixel + 12, copies + 3  # the intermediates of scaling samples or compositing onto white
        return picture.width * picture.height * per_pixel + picture.height * _ROW_BYTES * copies + self.tile_pixels * stored

    def decode(self) -> Image.Image:
        """The loaded, upright RGB picture (see the module docstring), reduced as ``min_side`` allows.

        Raises :class:`InvalidInput` or :class:`PayloadTooLarge`, and nothing else. The full-size
        buffer is dropped before this returns.
        """
        picture, self.picture = self.picture, None
        with translated_errors(f"{self.field} ({self.kind})", too_large=_PILLOW_BOMB_GUARD):
            picture.load()
            orientation = _orientation(picture)
            rgb = _to_rgb(picture)
            del picture
            if self.min_side is not None and (factor := min(rgb.size) // (REDUCING_GAP * self.min_side)) >= 2:
                rgb = rgb.reduce(factor)
            if orientation != 1:
                rgb = rgb.transpose(_TRANSPOSITIONS[orientation])
                if orientation >= 5:  # a quarter turn: the picture as shown is the header's size turned
                    self.size = self.size[::-1]
            return rgb


def open_image(data: bytes, limits: MediaLimits, *, field: str = "image", min_side: int | None = None) -> OpenedImage:
    """Recognise and open one image upload, checking its size from the header (see :class:`OpenedImage`).

    ``field`` names the input in every message, so a client sending several images learns
    which one is wrong. Raises :class:`InvalidInput`, :class:`PayloadTooLarge` or
    :class:`UnsupportedMediaType`, and nothing else, whatever ``data`` holds.
    """
    check_byte_count(data, limit=limits.max_image_bytes, subject=field)
    kind = next((name for name, (signature, _) in _FORMATS.items() if signature.match(data)), None)
    if kind is None:
        raise UnsupportedMediaType(f"{field} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})")
    opener = _FORMATS[kind][1]
    with translated_errors(f"{field} ({kind})", too_large=_PILLOW_BOMB_GUARD):
        picture = opener(io.BytesIO(data))
        check_image_size(picture.width, picture.height, limits, field=field)
        opened = OpenedImage(picture, kind, field, min_side, _tile_pixels(picture, limits, f"{field} ({kind})"))
        if min_side is not None and kind == "JPEG":
            # Decodes at 1/2, 1/4 or 1/8 scale with the short side still at least this long.
            picture.draft(None, (REDUCING_GAP * min_side,) * 2)
        return opened


def decode_image(data: bytes, limits: MediaLimits, *, field: str = "image",
                 min_side: int | None = None) -> Image.Image:
    """Decode one image upload into a loaded, upright RGB picture (see :class:`OpenedImage`)."""
    return open_image(data, limits, field=field, min_side=min_side).decode()


def open_frame_pair(first: bytes, second: bytes, limits: MediaLimits) -> tuple[OpenedImage, OpenedImage]:
    """Open the two frames of an optical-flow request, refusing frames of different sizes before decoding.

    The frames may differ in format and pixel mode; only their sizes must agree, since flow
    maps each pixel of the first frame into the second. Flow needs every pixel, so nothing
    is reduced. Sizes that agree once one frame is turned a quarter are compared again once both
    are decoded and upright (a PNG's EXIF orientation may follow its pixels in the file).
    """
    frames = open_image(first, limits, field="frame1"), open_image(second, limits, field="frame2")
    if sorted(frames[0].size) != sorted(frames[1].size):
        check_same_size(frames[0].size, frames[1].size)
    return frames


def decode_opened_pair(frames: tuple[OpenedImage, OpenedImage]) -> tuple[np.ndarray, np.ndarray]:
    """Decode an opened pair into same-sized ``(H, W, 3)`` uint8 arrays, one Pillow picture at a time."""
    arrays = tuple(np.array(frame.decode()) for frame in frames)
    check_same_size(frames[0].size, frames[1].size, upright=True)
    return arrays


def decode_frame_pair(first: bytes, second: bytes, limits: MediaLimits) -> tuple[np.ndarray, np.ndarray]:
    """Both steps at once (see :func:`open_frame_pair`)."""
    return decode_opened_pair(open_frame_pair(first, second, limits))


def check_same_size(frame1: tuple[int, int], frame2: tuple[int, int], *, upright: bool = False) -> None:
    """Refuse flow frames of different ``(width, height)``: the same message whichever form they came in."""
    if frame1 != frame2:
        turned = " (upright, after their EXIF orientation)" if upright else ""
        raise InvalidInput(f"frame1 is {_dimensions(*frame1)} but frame2 is {_dimensions(*frame2)}{turned}; "
                           "both frames must be the same size", code="frame_size_mismatch")


def _orientation(picture: Image.Image) -> int:
    """The EXIF orientation that turns ``picture`` upright (1: as stored). An EXIF block that does not
    parse, or an orientation that is not one of the eight, is ignored, as browsers do: the pixels may be
    fine."""
    try:
        orientation = picture.getexif().get(ExifTags.Base.Orientation, 1)
        return orientation if orientation in _TRANSPOSITIONS else 1
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises several kinds for broken metadata
        return 1


def _tile_pixels(picture: ImageFile.ImageFile, limits: MediaLimits, subject: str) -> int:
    """The pixels of a tiled TIFF's tile (libtiff allocates one tile's buffer: a 46,000 px square tile in a
    4.6 KB file of a 64 × 64 picture asks for 2 GiB), refused beyond the pixel limit; 0 for other files."""
    tags = getattr(picture, "tag_v2", None)
    if tags is None or _TILE_WIDTH not in tags:
        return 0
    width, length = int(tags.get(_TILE_WIDTH, 0)), int(tags.get(_TILE_LENGTH, 0))
    if width * length > limits.max_image_pixels:
        raise PayloadTooLarge(f"{subject} is stored in tiles of {_dimensions(width, length)}, which have "
                              f"{width * length} pixels each; the limit is {limits.max_image_pixels}")
    return width * length


def rgb_frame_from_raw(
    data: bytes, height: int, width: int, limits: MediaLimits, *, field: str = "frame"
) -> np.ndarray:
    """Check and reshape a raw RGB24 frame (row-major, 3 bytes a pixel) into ``(H, W, 3)`` uint8.

    gRPC clients send frames this way to skip encoding; the byte count must be exactly
    ``height * width * 3`` because there is no header to say where rows end.
    """
    check_image_size(width, height, limits, field=field)
    expected = height * width * 3
    if len(data) != expected:
        raise InvalidInput(
            f"{field} has {len(data)} bytes, but a {_dimensions(width, height)} RGB24 frame has {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3).copy()


def check_image_size(width: int, height: int, limits: MediaLimits, *, field: str = "image") -> None:
    """Enforce the side and pixel-count limits on dimensions read from a header."""
    if min(width, height) < limits.min_image_side:
        raise InvalidInput(
            f"{field} is {_dimensions(width, height)}; each side must be at least {limits.min_image_side} px"
        )
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(
            f"{field} is {_dimensions(width, height)}, which has {width * height} pixels; "
            f"the limit is {limits.max_image_pixels}"
        )


def _dimensions(width: int, height: int) -> str:
    return f"{width}×{height}"


def _may_have_transparency(picture: Image.Image) -> bool:
    return picture.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in picture.info


def _to_rgb(picture: Image.Image) -> Image.Image:
    """An RGB picture of ``picture`` (itself when it already is one: no copy of a full-size buffer)."""
    if picture.mode == "RGB" and not picture.has_transparency_data:
        return picture
    if picture.mode in _HIGH_DEPTH_MODES:
        picture = _to_8bit_gray(picture)
    if picture.has_transparency_data:
        rgba = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return picture.convert("RGB")


def _to_8bit_gray(picture: Image.Image) -> Image.Image:
    # Pillow's own conversion of these modes to "L" clips at 255 instead of scaling.
    samples = np.asarray(picture)
    if picture.mode == "F":
        eight_bit = np.nan_to_num(samples, nan=0.0).clip(0.0, 1.0) * 255.0 + 0.5
    else:
        eight_bit = samples.clip(0, 65535) >> 8
    return Image.fromarray(eight_bit.astype(np.uint8))
