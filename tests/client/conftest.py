"""The session's real server is `process` (tests/conftest.py); these name it for perceiver-client."""

from __future__ import annotations

import pytest

from .clips import make_clip


@pytest.fixture(scope="session")
def address(process) -> list[str]:
    """perceiver-client's flags for the session's server."""
    return ["--url", process.url, "--grpc-address", f"127.0.0.1:{process.grpc_port}"]


@pytest.fixture(scope="session")
def mp4(tmp_path_factory):
    """~3 s of H.264 at 96×72 (not the model's size), 30 fps, with AAC stereo at 44.1 kHz."""
    return make_clip(tmp_path_factory.mktemp("clips") / "input.mp4")
