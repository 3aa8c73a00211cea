"""POST /flow: tiling on large frames equals the DeepMind recipe, all output formats round-trip."""

import io
import itertools

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.servers import demo_model, write_repository
from perceiver_serve.media.flow_formats import from_flo
from perceiver_serve.modeling import flow_patches

from ..numerics import FP32, assert_close, assert_distinct
from ..support import running
from .conftest import error_of, png_bytes

rng = np.random.default_rng(11)


def reference_flow(model, frame1: np.ndarray, frame2: np.ndarray, overlap: int = 20, scale: float = 20.0):
    """The DeepMind colab's tiling and blending, written out independently of the server's FlowTiler."""
    th, tw = model.config.train_size
    height, width = frame1.shape[:2]
    ys = list(range(0, height, th - overlap))
    xs = list(range(0, width, tw - overlap))
    ys[-1], xs[-1] = height - th, width - tw
    flows, counts = np.zeros((height, width, 2)), np.zeros((height, width, 1))
    wx, wy = np.meshgrid(np.arange(tw), np.arange(th))
    weights = np.minimum(np.minimum(wx + 1, tw - wx), np.minimum(wy + 1, th - wy))[..., None]
    for y, x in itertools.product(ys, xs):
        pair = np.stack([frame1[y:y + th, x:x + tw], frame2[y:y + th, x:x + tw]])[None]
        with torch.no_grad():
            piece = model(flow_patches(torch.from_numpy(pair)))[0].numpy() * scale
        flows[y:y + th, x:x + tw] += piece * weights
        counts[y:y + th, x:x + tw] += weights
    return (flows / counts).astype(np.float32)


@pytest.fixture(scope="module")
def frames():
    # 84×132 with 48×64 tiles: bigger than a tile both ways, and a size where the colab's grid
    # (which lets a second-to-last tile overhang the border on some sizes) is well formed.
    first = rng.integers(0, 256, (84, 132, 3), dtype=np.uint8)
    second = np.roll(first, (2, 3), axis=(0, 1))
    return first, second


def post_flow(client, first, second, fmt=None, **extra):
    data = {"format": fmt} if fmt else {}
    return client.post("/flow", files={"frame1": ("a.png", png_bytes(first)), "frame2": ("b.png", png_bytes(second))},
                       data={**data, **extra})


def test_large_frames_equal_reference_tiling(client, direct, frames):
    model = direct("optical-flow")
    assert frames[0].shape[0] > model.config.train_size[0] and frames[0].shape[1] > model.config.train_size[1]
    r = post_flow(client, *frames)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-npy"
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.shape == (84, 132, 2) and got.dtype == np.float32
    expected = reference_flow(model, *frames)
    assert_close(got, expected, FP32, "the served flow")
    first, second = frames
    assert_distinct(expected, reference_flow(model, second, first), FP32, "frames swapped")
    assert_distinct(expected, reference_flow(model, first, first), FP32, "frame 2 ignored")
    assert_distinct(expected, reference_flow(model, *frames, scale=20.0 / 1.04), FP32, "flow scaled by 1/1.04")


def test_all_formats_round_trip(client, frames):
    npy = np.load(io.BytesIO(post_flow(client, *frames, "npy").content))
    flo = from_flo(post_flow(client, *frames, "flo").content)
    assert np.array_equal(npy, flo)
    png = post_flow(client, *frames, "png")
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert picture.size == (132, 84) and picture.mode == "RGB"
    js = post_flow(client, *frames, "json").json()
    assert js["height"] == 84 and js["width"] == 132
    assert np.allclose(np.stack([js["u"], js["v"]], -1), npy, atol=1e-4)


def test_frames_smaller_than_a_tile_are_padded(client, direct):
    model = direct("optical-flow")
    th, tw = model.config.train_size
    small = rng.integers(0, 256, (th - 10, tw - 20, 3), dtype=np.uint8)
    other = np.roll(small, (1, 2), axis=(0, 1))
    r = post_flow(client, small, other)
    assert r.status_code == 200
    got = np.load(io.BytesIO(r.content))

    def direct_flow(mode: str) -> np.ndarray:
        padded = np.pad(np.stack([small, other]), ((0, 0), (0, 10), (0, 20), (0, 0)), mode=mode)
        with torch.no_grad():
            return model(flow_patches(torch.from_numpy(padded[None])))[0].numpy()[: th - 10, : tw - 20] * 20

    expected = direct_flow("edge")
    assert got.shape == (th - 10, tw - 20, 2)
    assert_close(got, expected, FP32, "the flow of a padded frame pair")
    assert_distinct(expected, direct_flow("constant"), FP32, "zero padding instead of edge repetition")


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("different_sizes", 400, "frame_size_mismatch"),
        ("too_small", 400, "frame_too_small"),
        ("missing_frame2", 400, "missing_field"),
        ("not_an_image", 415, "unsupported_media_type"),
        ("bad_format", 422, "invalid_request"),
        ("wrong_model", 404, "wrong_task"),
        ("json_body", 415, "unsupported_media_type"),
    ],
)
def test_flow_errors(client, frames, case, status, code):
    a, b = png_bytes(frames[0]), png_bytes(frames[1])
    files = {"frame1": ("a.png", a), "frame2": ("b.png", b)}
    data = {}
    if case == "different_sizes":
        files["frame2"] = ("b.png", png_bytes(frames[1][:70]))
    elif case == "too_small":
        tiny = png_bytes(frames[0][:8, :8])
        files = {"frame1": ("a.png", tiny), "frame2": ("b.png", tiny)}
    elif case == "missing_frame2":
        del files["frame2"]
    elif case == "not_an_image":
        files["frame1"] = ("a.txt", b"%PDF-1.4 not an image")
    elif case == "bad_format":
        data = {"format": "gif"}
    elif case == "wrong_model":
        data = {"model": "text-sentiment"}
    if case == "json_body":
        r = client.post("/flow", json={"frame1": "x"})
    else:
        r = client.post("/flow", files=files, data=data)
    assert error_of(r) == (status, code)


def test_frames_needing_more_tiles_than_the_queue_holds_are_served(tmp_path):
    """As 1024×436 frames (345 tiles of 48×64) on the demo model, whose queue holds 256: here
    a queue of 8 and frames of 49 tiles, so the test stays short. They are admitted in parts."""
    repository = write_repository(tmp_path, {"optical-flow": demo_model("optical-flow")},
                                  batching={"max_queue": 8, "max_batch_size": 4, "timeout_ms": 600_000})
    first = rng.integers(0, 256, (212, 328, 3), dtype=np.uint8)
    with running(repository=repository) as proc, httpx.Client(base_url=proc.url, timeout=600) as client:
        assert client.get("/models/optical-flow").json()["geometry"]["max_tiles"] > 49
        r = post_flow(client, first, np.roll(first, 3, axis=1), fmt="npy")
        assert r.status_code == 200, r.text
        assert np.load(io.BytesIO(r.content), allow_pickle=False).shape == (212, 328, 2)


def test_frames_over_the_per_request_tile_limit_are_refused_before_tiling(client):
    limit = client.get("/models/optical-flow").json()["geometry"]["max_tiles"]
    huge = np.zeros((48, 64 + 44 * limit, 3), dtype=np.uint8)  # limit + 1 tiles in one row
    r = post_flow(client, huge, huge)
    assert error_of(r) == (413, "too_large")
    assert f"at most {limit} per request" in r.json()["error"]["message"]
