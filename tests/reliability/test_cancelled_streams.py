"""Streams cancelled right after their config are counted and logged as cancels, never as client errors.

gRPC reports such a cancel to the handler as the end of the stream's input a moment before
the cancellation itself; a stream with no frames at its end would otherwise be refused as
INVALID_ARGUMENT ("no frames"). Half the clients also close their connection, which made
that race more frequent.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import metric_value

STREAMS = 150
SERIES = dict(model="video-autoencoder", endpoint="ReconstructVideo", protocol="grpc")
ACCESS_LINE = re.compile(r"grpc ReconstructVideo (\w+) ")


def cancel_after_config(port: int, close_connection: bool) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    release = threading.Event()

    def requests():
        yield pb.ReconstructVideoRequest(config=pb.StreamConfig(chunks_per_window=1))
        release.wait(60)  # the input stays open: the client cancels, it does not end its stream

    try:
        call = perceiver_pb2_grpc.PerceiverStub(channel).ReconstructVideo(requests(), timeout=120)
        assert next(call).HasField("started")
        call.cancel()
        if close_connection:
            channel.close()
    finally:
        release.set()
        channel.close()


def statuses(server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in ACCESS_LINE.findall(server.logs()):
        counts[status] = counts.get(status, 0) + 1
    return counts


def requests_total(rest, status: str) -> float:
    return metric_value(rest.get("/metrics").text, "perceiver_requests_total", **SERIES, status=status)


def wait_for_count(rest, status: str, target: float, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while (value := requests_total(rest, status)) < target and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.filterwarnings("ignore")
def test_streams_cancelled_after_their_config_count_as_cancelled(server, rest):
    logged_before = statuses(server)
    before = {status: requests_total(rest, status) for status in ("CANCELLED", "INVALID_ARGUMENT")}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cancel_after_config(server.grpc_port, i % 2 == 1), range(STREAMS)))
    cancelled = wait_for_count(rest, "CANCELLED", before["CANCELLED"] + STREAMS)
    assert cancelled - before["CANCELLED"] == STREAMS
    assert requests_total(rest, "INVALID_ARGUMENT") == before["INVALID_ARGUMENT"]
    logged = statuses(server)
    assert logged.get("CANCELLED", 0) - logged_before.get("CANCELLED", 0) == STREAMS
    assert logged.get("INVALID_ARGUMENT", 0) == logged_before.get("INVALID_ARGUMENT", 0)
