from __future__ import annotations

import grpc
import pytest

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc
from perceiver_serve.settings import Settings

from .inprocess import InProcessServer, write_repository

API_KEY = "grpc-test-key"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
MAX_MESSAGE_MB = 1.0


# -- the real process (`process`, `rest`, `channel`: tests/conftest.py) ----------------------------

@pytest.fixture(scope="session")
def stub(channel):
    return perceiver_pb2_grpc.PerceiverStub(channel)


# -- in this process: an API key, a 1 MiB message limit, the video, text and flow test models -------

def settings_for(root, **overrides) -> Settings:
    return Settings(model_repository=root, host="127.0.0.1", grpc_port=0, api_key=API_KEY,
                    grpc_max_message_mb=MAX_MESSAGE_MB, **overrides)


@pytest.fixture(scope="session")
def inproc(tmp_path_factory):
    models = ("video-autoencoder", "text-sentiment", "optical-flow")
    repository = write_repository(tmp_path_factory.mktemp("repo"), *models)
    server = InProcessServer(settings_for(repository)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def loading_server(tmp_path_factory):
    """A server whose models never finish loading (load_all is not called)."""
    server = InProcessServer(settings_for(write_repository(tmp_path_factory.mktemp("loading"))), load=False).start()
    yield server
    server.stop()


def _stub(address: str, options=()):
    ch = grpc.insecure_channel(address, options=list(options))
    return ch, perceiver_pb2_grpc.PerceiverStub(ch)


@pytest.fixture()
def local(inproc):
    """A fresh channel to the in-process server (tests cancel calls and tune flow control)."""
    ch, stub = _stub(inproc.address)
    yield stub
    ch.close()


@pytest.fixture()
def make_stub(inproc):
    """Stubs on channels with the given grpc options."""
    channels = []

    def make(options: dict[str, int | str]):
        ch, stub = _stub(inproc.address, options.items())
        channels.append(ch)
        return stub

    yield make
    for ch in channels:
        ch.close()
