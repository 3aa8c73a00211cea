from __future__ import annotations

import httpx
import pytest

from ..support import running
from .clips import make_clip


@pytest.fixture(scope="session")
def server():
    """The real `perceiver-serve serve` on the demo models, REST and gRPC."""
    with running(grpc=True) as proc:
        yield proc


@pytest.fixture(scope="session")
def rest(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def address(server) -> list[str]:
    """perceiver-client's flags for the session's server."""
    return ["--url", server.url, "--grpc-address", f"127.0.0.1:{server.grpc_port}"]


@pytest.fixture(scope="session")
def mp4(tmp_path_factory):
    """~3 s of H.264 at 96×72 (not the model's size), 30 fps, with AAC stereo at 44.1 kHz."""
    return make_clip(tmp_path_factory.mktemp("clips") / "input.mp4")
