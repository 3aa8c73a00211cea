import io
import json
import struct
import tracemalloc

import numpy as np
import pytest
from perceiver_serve.errors import InvalidInput
from perceiver_serve.media import (
    FLOW_FORMATS,
    colour_wheel,
    flow_to_rgb,
    from_flo,
    from_npy,
    to_flo,
    to_json,
    to_npy,
    to_png,
)
from PIL import Image

from .samples import WHITE, rejected

FLOW = np.random.default_rng(0).normal(scale=5.0, size=(5, 7, 2)).astype(np.float32)


def test_npy_round_trip_is_exact():
    assert np.array_equal(from_npy(to_npy(FLOW)), FLOW)


def test_flo_round_trip_is_exact_and_follows_the_middlebury_layout():
    data = to_flo(FLOW)
    assert data[:4] == b"PIEH" and struct.unpack("<f", data[:4]) == (202021.25,)
    assert struct.unpack("<ii", data[4:12]) == (7, 5)  # width, then height
    assert struct.unpack("<2f", data[12:20]) == tuple(FLOW[0, 0])  # u, v of the top-left pixel
    assert len(data) == 12 + 5 * 7 * 2 * 4
    assert np.array_equal(from_flo(data), FLOW)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"PIEH\x01", "flow (flo) is 5 bytes, shorter than the 12-byte .flo header"),
        (b"HEIP" + struct.pack("<ii", 1, 1) + bytes(8), "not the .flo magic number b'PIEH'"),
        (b"PIEH" + struct.pack("<ii", 0, 3), "header says the field is 0×3"),
        (b"PIEH" + struct.pack("<ii", -1, -1) + bytes(8), "header says the field is -1×-1"),
        (b"PIEH" + struct.pack("<ii", 2, 1) + bytes(8), "flow (flo) is 20 bytes, but a 2×1 field takes 28"),
        (b"PIEH" + struct.pack("<ii", 65536, 65536), "but a 65536×65536 field takes 34359738380"),
    ],
)
def test_bad_flo_files_are_invalid(data, fragment):
    with rejected(InvalidInput, "invalid_input", fragment):
        from_flo(data)


@pytest.mark.parametrize(
    "array",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.float64), np.zeros((8, 2), np.float32)],
    ids=["three-channels", "float64", "two-dimensional"],
)
def test_npy_of_something_else_is_invalid(array):
    stream = io.BytesIO()
    np.save(stream, array)
    with rejected(InvalidInput, "invalid_input", "flow (npy) does not hold a float32 (H, W, 2) array"):
        from_npy(stream.getvalue())


def test_pickled_npy_is_refused_not_run():
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with rejected(InvalidInput, "invalid_input", "flow (npy) is corrupt"):
        from_npy(stream.getvalue())


def test_png_is_an_rgb_picture_of_the_field():
    picture = Image.open(io.BytesIO(to_png(FLOW)))
    assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == (7, 5)
    assert np.array_equal(np.asarray(picture), flow_to_rgb(FLOW))


def test_colour_wheel_has_the_published_segments():
    wheel = colour_wheel()
    assert wheel.shape == (55, 3)  # RY 15 + YG 6 + GC 4 + CB 11 + BM 13 + MR 6
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255), 49: (255, 0, 255)}
    for index, colour in starts.items():
        assert wheel[index].tolist() == list(colour)
    assert wheel[7].tolist() == [255, 119, 0]  # floor(255 * 7 / 15) on the way to yellow
    assert wheel[54].tolist() == [255, 0, 43]  # last step back towards red


def field(*vectors: tuple[float, float]) -> np.ndarray:
    return np.array([vectors], dtype=np.float32)


def test_zero_flow_is_white():
    assert (flow_to_rgb(np.zeros((3, 4, 2), np.float32)) == WHITE).all()


def test_sub_pixel_noise_is_drawn_pale_not_as_motion():
    """A still scene's flow of millionths of a pixel is near white; half a pixel is half saturated."""
    assert (flow_to_rgb(field((6.5e-6, 0.0), (0.0, -3e-6))) >= 254).all()
    assert flow_to_rgb(field((0.5, 0.0)))[0, 0].tolist() == [255, 127, 127]


def test_rightward_flow_is_the_hue_at_angle_zero():
    rgb = flow_to_rgb(field((4.0, 0.0), (2.0, 0.0), (0.0, 0.0)))
    assert rgb[0].tolist() == [list(colour_wheel()[0]), [255, 127, 127], list(WHITE)]


def test_opposite_directions_get_opposite_hues():
    rgb = flow_to_rgb(field((-3.0, 0.0), (0.0, 3.0), (0.0, -3.0)))
    assert rgb[0, 0].tolist() == colour_wheel()[27].tolist()  # left: half-way round the 0…54 wheel
    assert rgb[0, 1, 2] == 0 and rgb[0, 2, 2] > 200  # down is yellowish, up is bluish


def test_flow_beyond_the_given_maximum_is_darkened():
    rgb = flow_to_rgb(field((2.0, 0.0)), max_magnitude=1.0)
    assert rgb[0, 0].tolist() == [191, 0, 0]  # 0.75 × red


def test_unknown_flow_is_black():
    rgb = flow_to_rgb(field((np.nan, 0.0), (1e10, 0.0), (1.0, 0.0)))
    assert rgb[0, :2].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert rgb[0, 2].tolist() == [255, 0, 0]


def test_max_magnitude_must_be_positive():
    with pytest.raises(ValueError, match="max_magnitude"):
        flow_to_rgb(FLOW, max_magnitude=0.0)


def test_json_gives_rows_of_u_and_v():
    body = to_json(field((1.23456, -2.0), (0.0, 0.5)))
    assert body == {"height": 1, "width": 2, "u": [[1.2346, 0.0]], "v": [[-2.0, 0.5]]}


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("npy", "application/x-npy"),
        ("flo", "application/octet-stream"),
        ("png", "image/png"),
        ("json", "application/json"),
    ],
)
def test_every_format_has_a_media_type_and_encodes_to_bytes(name, media_type):
    assert FLOW_FORMATS[name].media_type == media_type
    assert isinstance(FLOW_FORMATS[name].encode(FLOW), bytes)


def test_json_format_encodes_the_json_body():
    assert json.loads(FLOW_FORMATS["json"].encode(FLOW)) == to_json(FLOW)


@pytest.mark.parametrize("encode", [to_npy, to_flo, to_png, to_json])
def test_encoders_refuse_arrays_that_are_not_flow(encode):
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        encode(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize("name", sorted(FLOW_FORMATS))
def test_each_format_encodes_within_the_memory_it_declares(name):
    """``bytes_per_pixel`` is what the decode budget charges a flow answer for its encoding."""
    flow = np.random.default_rng(18).normal(0, 5, (200, 300, 2)).astype(np.float32)
    tracemalloc.start()
    try:
        FLOW_FORMATS[name].encode(flow)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= FLOW_FORMATS[name].bytes_per_pixel * 200 * 300
