"""One real `perceiver-serve` process (REST and gRPC) shared by the corpus, fuzzing and load tests."""

from __future__ import annotations

import httpx
import pytest

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import grpc_channel, running
from .repository import clone_model, repository

# A model with a tiny queue, for watching 429s without disturbing the others.
SMALL_QUEUE = "text-small-queue"


@pytest.fixture(scope="session")
def shared_repository(tmp_path_factory):
    root = repository(tmp_path_factory.mktemp("reliability-repo"))
    clone_model(root, "text-sentiment", SMALL_QUEUE, max_queue=4, max_batch_size=2, max_delay_ms=20)
    return root


@pytest.fixture(scope="session")
def server(shared_repository):
    with running(grpc=True, repository=shared_repository) as proc:
        yield proc


@pytest.fixture(scope="session")
def rest(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def channel(server):
    with grpc_channel(server.grpc_port, **{"grpc.max_send_message_length": 128 << 20}) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel):
    return perceiver_pb2_grpc.PerceiverStub(channel)
