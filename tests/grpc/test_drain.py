"""SIGTERM on the real process: a stream in flight finishes within the grace period, new RPCs are refused."""

from __future__ import annotations

import signal

import grpc

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import ServerProcess
from .inprocess import write_repository
from .test_video import plain_stream


def test_stream_in_flight_finishes_when_the_server_drains(tmp_path):
    repository = write_repository(tmp_path / "repo", "video-autoencoder")
    with ServerProcess("--grace-period", "30", grpc=True, repository=repository) as proc:
        proc.wait()
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = perceiver_pb2_grpc.PerceiverStub(channel)
            responses = stub.ReconstructVideo(plain_stream(16, 16), timeout=60)
            kinds = [next(responses).WhichOneof("kind"), next(responses).WhichOneof("kind")]
            proc.process.send_signal(signal.SIGTERM)
            kinds += [m.WhichOneof("kind") for m in responses]
            assert responses.code() == grpc.StatusCode.OK
            assert kinds == ["started"] + (["chunk"] * 16 + ["labels"]) * 4
            try:
                stub.ListModels(pb.ListModelsRequest(), timeout=5)
                refused = None
            except grpc.RpcError as error:
                refused = error.code()
            assert refused == grpc.StatusCode.UNAVAILABLE
        assert proc.process.wait(60) == 0  # by itself: another SIGTERM now would quit at once
    assert "draining" in proc.logs()
