"""Fuzzing: schemathesis on every operation of /openapi.json against the shared server, and
hypothesis on what reaches decoders and gRPC parsing that tests/media/test_fuzz.py does not
cover (raw RGB frames, .npy flow files, arbitrary gRPC message bytes).

tests/media/test_fuzz.py fuzzes the image, frame-pair, audio, raw PCM and .flo decoders
(200 examples each). Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from perceiver_serve.api.grpc import SERVICE
from perceiver_serve.api.rest import create_app
from perceiver_serve.api.state import ServerState
from perceiver_serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from perceiver_serve.media import MediaLimits, from_npy, rgb_frame_from_raw, to_npy
from perceiver_serve.metrics import Metrics

from ..support import rss_bytes

pytestmark = pytest.mark.filterwarnings("ignore")
EXAMPLES = 40
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
INPUT_ERRORS = (InvalidInput, PayloadTooLarge, UnsupportedMediaType)
RSS_GROWTH_LIMIT = 256 << 20


def our_openapi() -> dict:
    """The schema the server serves at /openapi.json (compared with the live one below), built at collection."""
    app = create_app(ServerState(None, Metrics(), MediaLimits()))  # the schema needs no models
    return app.openapi()


SPEC = our_openapi()
OPERATIONS = {result.ok().label: result.ok() for result in schemathesis.openapi.from_dict(SPEC).get_all_operations()}


def errors_have_our_shape(ctx, response, case) -> None:
    """Every 4xx with a body is ``{"error": {"code", "message"}}``; a 5xx never happens (checked apart)."""
    if 400 <= response.status_code < 500 and case.method != "HEAD":
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body


def fuzz_once(server, label: str, data: st.DataObject) -> int:
    """One valid or invalid request (by the schema) to one operation, checked; its status."""
    operation = OPERATIONS[label]
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    case = data.draw(operation.as_strategy(generation_mode=mode))
    response = case.call(base_url=server.url, timeout=120)
    checks = [not_a_server_error, status_code_conformance, errors_have_our_shape]
    case.validate_response(response, checks=checks)
    return response.status_code


@pytest.fixture(scope="module")
def rss_before(server):
    return rss_bytes(server.process.pid)


def test_the_live_schema_is_the_one_fuzzed(rest):
    assert rest.get("/openapi.json").json() == json.loads(json.dumps(SPEC))


@pytest.mark.parametrize("label", OPERATIONS)
@FUZZ
@given(data=st.data())
def test_openapi_operation(server, rss_before, label, data):
    """Valid and invalid requests (by the schema) for every operation; multipart bodies included.

    A status the operation does not document is a failure, as a 5xx is."""
    fuzz_once(server, label, data)


def test_fuzzing_left_the_server_serving_within_bounded_memory(server, rest, rss_before):
    """A round of its own over all operations (so that it checks something when run alone), then the server."""
    seen: dict[int, int] = {}

    @settings(max_examples=3 * len(OPERATIONS), deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        status = fuzz_once(server, data.draw(st.sampled_from(sorted(OPERATIONS))), data)
        seen[status] = seen.get(status, 0) + 1

    fuzz()
    assert sum(seen.values()) >= len(OPERATIONS), seen
    assert rest.get("/health/ready").status_code == 200
    assert rest.post("/classify/text", json={"text": "after fuzzing"}).status_code == 200
    grown = rss_bytes(server.process.pid) - rss_before
    print(f"\nschemathesis: responses by status {seen}; server RSS grew {grown / 2**20:.0f} MiB")
    assert not any(status >= 500 for status in seen)
    assert grown < RSS_GROWTH_LIMIT


# -- gRPC: any bytes as any RPC's request -----------------------------------------------------------------------

UNARY = [m.name for m in SERVICE.methods if not m.client_streaming]


@pytest.mark.parametrize("rpc", UNARY)
@FUZZ
@given(data=st.one_of(st.binary(max_size=512), st.binary(max_size=8).map(lambda b: b"\x0a\xff\xff\x03" + b)))
def test_grpc_any_bytes(channel, rpc, data):
    call = channel.unary_unary(f"/{SERVICE.full_name}/{rpc}")
    try:
        call(data, timeout=60)
    except grpc.RpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()


@FUZZ
@given(st.binary(max_size=256).map(lambda body: b"\x0a\x00" + body) | st.binary(max_size=256))
def test_video_stream_of_any_bytes(channel, data):
    call = channel.stream_stream(f"/{SERVICE.full_name}/ReconstructVideo")
    try:
        list(call(iter([b"\x0a\x02\x10\x01", data]), timeout=60))  # a config (chunks_per_window 1), then anything
    except grpc.RpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()


# -- decoders not fuzzed in tests/media ------------------------------------------------------------------------

LIMITS = MediaLimits(max_image_pixels=256 * 256)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_rgb_frame_from_raw(data, height, width):
    try:
        frame = rgb_frame_from_raw(data, height, width, LIMITS)
    except INPUT_ERRORS:
        return
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=256),
                 st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(0, 200), st.binary(min_size=1, max_size=8))
                 .map(lambda t: _mutated_npy(*t))))
def test_from_npy(data):
    try:
        flow = from_npy(data)
    except INPUT_ERRORS:
        return
    assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2


def _mutated_npy(height: int, width: int, at: int, junk: bytes) -> bytes:
    data = bytearray(to_npy(np.zeros((height, width, 2), np.float32)))
    data[at:at + len(junk)] = junk
    return bytes(data)
