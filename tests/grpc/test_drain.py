"""SIGTERM on the real process: a stream in flight finishes within the grace period, new RPCs are refused."""

from __future__ import annotations

import signal
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import ServerProcess
from .inprocess import write_repository
from .test_video import plain_stream


def held_stream(release: threading.Event):
    """The config and the first four frames, then the rest once ``release`` is set: the stream stays
    in flight (the server waits for its frames) for as long as the test needs."""
    messages = plain_stream(16, 16)
    yield next(messages)
    yield next(messages)
    release.wait(60)
    yield from messages


def wait_until_not_serving(channel: grpc.Channel, timeout: float = 30.0) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING:
            return
        time.sleep(0.05)
    raise AssertionError("the server did not report NOT_SERVING after SIGTERM")


def test_stream_in_flight_finishes_when_the_server_drains(tmp_path):
    repository = write_repository(tmp_path / "repo", "video-autoencoder")
    release = threading.Event()
    with ServerProcess("--grace-period", "30", grpc=True, repository=repository) as proc:
        proc.wait()
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = perceiver_pb2_grpc.PerceiverStub(channel)
            responses = stub.ReconstructVideo(held_stream(release), timeout=60)
            kinds = [next(responses).WhichOneof("kind"), next(responses).WhichOneof("kind")]
            proc.process.send_signal(signal.SIGTERM)
            wait_until_not_serving(channel)
            # draining, with the stream still waiting for its frames: a new RPC is refused
            try:
                stub.ListModels(pb.ListModelsRequest(), timeout=5)
                refused = None
            except grpc.RpcError as error:
                refused = error.code()
            assert refused == grpc.StatusCode.UNAVAILABLE
            release.set()
            kinds += [m.WhichOneof("kind") for m in responses]
            assert responses.code() == grpc.StatusCode.OK
            assert kinds == ["started"] + (["chunk"] * 16 + ["labels"]) * 4
        assert proc.process.wait(60) == 0  # by itself: another SIGTERM now would quit at once
    assert "draining" in proc.logs()
