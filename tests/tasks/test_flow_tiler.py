"""FlowTiler on its own, over frame and tile sizes: coverage, weights, and what the blend keeps exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perceiver_serve.tasks.flow import FlowTiler


@st.composite
def tilers_and_frames(draw, smaller: bool = True) -> tuple[FlowTiler, int, int]:
    th, tw = draw(st.integers(3, 20)), draw(st.integers(3, 20))
    overlap = draw(st.integers(0, min(th, tw) - 1))
    low = 1 if smaller else None
    height = draw(st.integers(low or th, 3 * th + 7))
    width = draw(st.integers(low or tw, 3 * tw + 7))
    return FlowTiler((th, tw), overlap), height, width


def axis_starts(origins: list[tuple[int, int]], axis: int) -> list[int]:
    return sorted({o[axis] for o in origins})


@settings(max_examples=150, deadline=None)
@given(tilers_and_frames(smaller=False))
def test_tiles_cover_the_frame_inside_its_border_with_the_overlap(case):
    tiler, height, width = case
    th, tw = tiler.tile
    origins = tiler.origins(height, width)
    covered = np.zeros((height, width), dtype=int)
    for y, x in origins:
        assert 0 <= y <= height - th and 0 <= x <= width - tw, "a tile overhangs the border"
        covered[y:y + th, x:x + tw] += 1
    assert covered.min() >= 1, "a pixel no tile covers"
    assert len(set(origins)) == len(origins) == tiler.tile_count(height, width)
    for axis, size, tile in ((0, height, th), (1, width, tw)):
        starts = axis_starts(origins, axis)
        assert starts[0] == 0 and starts[-1] == size - tile  # flush with both borders
        steps = np.diff(starts)
        assert (steps <= tile - tiler.min_overlap).all(), "neighbours overlap by less than tile_overlap"
    assert sorted(origins) == sorted((y, x) for y in axis_starts(origins, 0) for x in axis_starts(origins, 1))


def test_weights_are_the_distance_to_the_tile_edge():
    tiler = FlowTiler((4, 6), 1)
    expected = np.array([[1, 1, 1, 1, 1, 1],
                         [1, 2, 2, 2, 2, 1],
                         [1, 2, 2, 2, 2, 1],
                         [1, 1, 1, 1, 1, 1]], dtype=np.float32)
    assert np.array_equal(tiler.weights(), expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30))
def test_weights_are_positive_symmetric_and_peak_in_the_middle(th, tw):
    weights = FlowTiler((th, tw), 0).weights()
    assert weights.shape == (th, tw) and weights.min() == 1
    assert np.array_equal(weights, weights[::-1]) and np.array_equal(weights, weights[:, ::-1])
    assert weights[th // 2, tw // 2] == weights.max() == min((th + 1) // 2, (tw + 1) // 2)


def blend_of(tiler: FlowTiler, height: int, width: int, field) -> np.ndarray:
    """Blend tiles cut from ``field(y, x)`` evaluated on the padded frame's grid."""
    th, tw = tiler.tile
    full_h, full_w = max(height, th), max(width, tw)
    origins = tiler.origins(full_h, full_w)
    ys, xs = np.mgrid[0:full_h, 0:full_w]
    values = field(ys, xs).astype(np.float32)
    flows = [values[y:y + th, x:x + tw] for y, x in origins]
    return tiler.blend(flows, origins, height, width), values[:height, :width]


@settings(max_examples=150, deadline=None)
@given(tilers_and_frames(), st.floats(-300, 300, width=32))
def test_a_constant_field_survives_the_blend(case, value):
    tiler, height, width = case
    got, want = blend_of(tiler, height, width,
                         lambda y, x: np.stack([np.full(y.shape, value), -np.full(y.shape, value)], -1))
    assert got.shape == (height, width, 2) and got.dtype == np.float32
    assert np.array_equal(got, want)


@settings(max_examples=150, deadline=None)
@given(tilers_and_frames(), st.floats(-4, 4), st.floats(-4, 4))
def test_a_linear_ramp_survives_the_blend(case, a, b):
    tiler, height, width = case
    got, want = blend_of(tiler, height, width, lambda y, x: np.stack([a * x + b * y, b * x - a * y + 1], -1))
    assert np.array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(tilers_and_frames())
def test_each_pixel_is_the_edge_distance_weighted_mean_of_its_tiles(case):
    """Tiles that each carry their own number: every pixel gets the weighted mean, weights from the tile edge."""
    tiler, height, width = case
    th, tw = tiler.tile
    origins = tiler.origins(max(height, th), max(width, tw))
    flows = [np.full((th, tw, 2), float(i), dtype=np.float32) for i in range(len(origins))]
    got = tiler.blend(flows, origins, height, width)
    for py, px in [(0, 0), (height - 1, width - 1), (height // 2, width // 3), (height // 3, width - 1)]:
        total = weight = 0.0
        for i, (y, x) in enumerate(origins):
            if y <= py < y + th and x <= px < x + tw:
                w = min(py - y + 1, y + th - py, px - x + 1, x + tw - px)
                total, weight = total + w * i, weight + w
        assert got[py, px, 0] == pytest.approx(total / weight, rel=1e-6)


@settings(max_examples=80, deadline=None)
@given(tilers_and_frames())
def test_split_cuts_tiles_of_both_frames_in_order(case):
    tiler, height, width = case
    th, tw = tiler.tile
    rng = np.random.default_rng(height * 1000 + width)
    first = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tiles, origins = tiler.split(first, second)
    assert origins == tiler.origins(max(height, th), max(width, tw))
    padded = np.pad(np.stack([first, second]), ((0, 0), (0, max(0, th - height)), (0, max(0, tw - width)), (0, 0)),
                    mode="edge")
    for tile, (y, x) in zip(tiles, origins):
        assert tile.shape == (2, th, tw, 3) and tile.dtype == np.uint8
        assert np.array_equal(tile, padded[:, y:y + th, x:x + tw])  # frame 1 first, edges repeated


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError):
        FlowTiler((8, 12), 8)
