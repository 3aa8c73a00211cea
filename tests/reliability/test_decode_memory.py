"""Small inputs that decode big: the server's peak memory stays bounded by the decode budget.

Each test measures the server process's own peak RSS (``VmHWM``, reset before the test
through ``/proc/PID/clear_refs``) while it decodes valid 6000×6000 pictures of about 100 KB
that inflate to 144 MB each in memory. The server runs with a small budget and more
preprocessing threads than the budget admits decodes, so the budget is what bounds it.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import Peak, grpc_channel, metric_value, running
from .repository import repository

MiB = 1 << 20
BUDGET_MB = 160  # one decoded 6000×6000 picture at a time
MAX_FRAMES = 64  # the video model's max_frames_per_stream in this repository
# Beyond the budget: the models' activations for a batch, allocator slack, request bodies. (32 big
# images grow the server by 104-113 MiB; 255-355 MiB when big decodes took turns on the eight
# preprocessing threads, each keeping freed memory in its own heap: see tasks.common._big_decodes.)
MODEL_MEMORY = 32 * MiB
SIDE = 6000


def png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A valid black 6000×6000 PNG: about 100 KB on the wire, 144 MB once decoded."""
    return png(Image.new("RGB", (SIDE, SIDE)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Requests wait their turn for the budget: give them time on a loaded machine.
    patient = {"timeout_ms": 600_000}
    root = repository(tmp_path_factory.mktemp("decode-memory"), "image-classifier", "optical-flow",
                      "video-autoencoder", **{"image-classifier": patient, "optical-flow": patient})
    # A heap for each thread, as on a machine of 16 cores (the server's default is one per core: on
    # 2 cores every preprocessing thread shares one, and what each thread's heap keeps would not show).
    with running("--max-decode-mb", str(BUDGET_MB), "--preprocess-threads", "8", "--malloc-arenas", "16",
                 grpc=True, repository=root) as proc:
        yield proc


@pytest.fixture(scope="module")
def rest(server):
    with httpx.Client(base_url=server.url, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server):
    with grpc_channel(server.grpc_port) as channel:
        yield perceiver_pb2_grpc.PerceiverStub(channel)


def video(stub, frames: list[bytes]) -> list[pb.ReconstructVideoResponse]:
    messages = [pb.ReconstructVideoRequest(config=pb.StreamConfig(chunks_per_window=1, return_image=False)),
                pb.ReconstructVideoRequest(media=pb.MediaPiece(frames=[pb.Frame(encoded=f) for f in frames]))]
    return list(stub.ReconstructVideo(iter(messages), timeout=300))


def inflight(rest) -> float:
    return metric_value(rest.get("/metrics").text, "perceiver_decode_bytes_inflight")


def test_sixteen_big_frames_in_one_message_peak_like_one(server, stub, rest, big_png):
    video(stub, [big_png])  # warm: thread stacks, codec tables, the first window's buffers
    with Peak(server.process.pid) as one:
        answers = video(stub, [big_png])
    with Peak(server.process.pid) as sixteen:
        answers16 = video(stub, [big_png] * 16)
    assert answers[-1].HasField("labels") and answers16[-1].HasField("labels")
    print(f"\npeak RSS growth: 1 frame {one.growth / MiB:.0f} MiB, 16 frames {sixteen.growth / MiB:.0f} MiB")
    assert one.growth < 400 * MiB  # one decoded frame (144 MB), not a copy of it at every step
    assert sixteen.growth <= 1.3 * one.growth + 16 * MiB
    assert inflight(rest) == 0


def test_more_frames_than_a_stream_allows_are_refused_before_decoding(server, stub, big_png):
    with Peak(server.process.pid) as peak, pytest.raises(grpc.RpcError) as info:
        video(stub, [big_png] * (MAX_FRAMES + 1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())["x-error-code"] == "too_many_frames"
    assert peak.growth < 64 * MiB, f"{peak.growth / MiB:.0f} MiB: frames were decoded"


def test_concurrent_big_images_stay_within_the_budget(server, rest, big_png):
    def classify(_):
        return rest.post("/classify/image", files={"image": ("big.png", big_png, "image/png")}).status_code

    with Peak(server.process.pid) as peak, ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(classify, range(32)))
    print(f"\n32 concurrent 6000×6000 PNGs: peak RSS growth {peak.growth / MiB:.0f} MiB (budget {BUDGET_MB} MiB)")
    assert statuses == [200] * 32
    assert peak.growth <= BUDGET_MB * MiB + MODEL_MEMORY
    assert inflight(rest) == 0


def test_concurrent_flow_requests_of_the_largest_frames_stay_within_the_budget(server, rest):
    """Flow keeps its frames at full size, so there the budget alone bounds them.

    The frames are the largest of which eight requests fit the flow model's queue together
    (30 of its 48×64 tiles each); the model's own memory is what one request adds.
    """
    rng = np.random.default_rng(18)
    frames = [png(Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8))) for _ in range(2)]

    def flow(_):
        files = {"frame1": ("a.png", frames[0], "image/png"), "frame2": ("b.png", frames[1], "image/png")}
        return rest.post("/flow", files=files).status_code

    with Peak(server.process.pid) as single:
        assert flow(0) == 200
    with Peak(server.process.pid) as peak, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(flow, range(8)))
    print(f"\nflow: peak RSS growth {single.growth / MiB:.0f} MiB for one request, {peak.growth / MiB:.0f} MiB "
          f"for 8 concurrent (budget {BUDGET_MB} MiB)")
    assert statuses == [200] * 8
    assert peak.growth <= BUDGET_MB * MiB + single.growth
    assert inflight(rest) == 0


def test_an_input_larger_than_the_whole_budget_is_refused_at_once(server, rest, stub):
    # RGBA with transparency: the decoded picture, its RGB copy and the compositing steps.
    picture = png(Image.new("RGBA", (4000, 4000), (0, 0, 0, 0)))
    before = metric_value(rest.get("/metrics").text, "perceiver_rejected_requests_total",
                          model="image-classifier", reason="decode_budget")
    with Peak(server.process.pid) as peak:
        r = rest.post("/classify/image", files={"image": ("big.png", picture, "image/png")})
        with pytest.raises(grpc.RpcError) as info:
            stub.ClassifyImage(pb.ClassifyImageRequest(image=picture), timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "decode_budget"), r.text
    assert "--max-decode-mb" in r.json()["error"]["message"]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata())["x-error-code"] == "decode_budget"
    assert peak.growth < 64 * MiB
    after = metric_value(rest.get("/metrics").text, "perceiver_rejected_requests_total",
                         model="image-classifier", reason="decode_budget")
    assert after - before == 2


def test_the_flow_answer_encoding_counts_against_the_budget(tmp_path):
    """PNG and JSON answers take many times the field's memory to encode: a request is charged for its format."""
    root = repository(tmp_path, "optical-flow")
    rng = np.random.default_rng(18)
    frames = [png(Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8))) for _ in range(2)]
    files = {"frame1": ("a.png", frames[0], "image/png"), "frame2": ("b.png", frames[1], "image/png")}
    # 180×240 frames: about 4 MiB to compute, +0.8 MiB as npy, +7 MiB as PNG or JSON.
    with running("--max-decode-mb", "6", repository=root) as proc, httpx.Client(base_url=proc.url,
                                                                                timeout=300) as client:
        served = client.post("/flow?format=npy", files=files)
        refused = {fmt: client.post(f"/flow?format={fmt}", files=files) for fmt in ("png", "json")}
    assert served.status_code == 200, served.text
    for fmt, r in refused.items():
        assert (r.status_code, r.json()["error"]["code"]) == (413, "decode_budget"), (fmt, r.text)
