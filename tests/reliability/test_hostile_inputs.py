"""The hostile input corpus against one running server, over REST and gRPC.

Every bad input gets a 4xx (the matching gRPC status) with the error code and a clear
message; every unusual but valid one is served. After the whole corpus the same server
still answers a good request on both protocols, is ready, and its memory has not ballooned.
Smaller, single-protocol tables of some of these live in tests/api, tests/grpc and
tests/media; this one is the whole corpus in one place, on one server.
"""

from __future__ import annotations

import socket

import grpc
import pytest

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb

from ..support import rss_bytes
from .corpus import GRPC_CASES, GRPC_CODE_OF, OK, REST_CASES, GrpcCase, RestCase

pytestmark = pytest.mark.filterwarnings("ignore")
RSS_GROWTH_LIMIT = 256 << 20  # one decoded 30000×30000 bomb would be 2.7 GB
MAX_MESSAGE_CHARS = 600
OUTCOMES: dict[str, int] = {}


@pytest.fixture(scope="module")
def baseline_rss(server, rest, stub):
    """The server's RSS once it has served one good request of each kind."""
    assert rest.post("/classify/text", json={"text": "warm"}).status_code == 200
    stub.ClassifyText(pb.ClassifyTextRequest(texts=["warm"]))
    return rss_bytes(server.process.pid)


def assert_clear(message: str) -> None:
    assert message and len(message) <= MAX_MESSAGE_CHARS, message
    assert "Traceback" not in message and "internal error" not in message, message


@pytest.mark.parametrize("case", REST_CASES, ids=lambda c: c.name)
def test_rest(rest, baseline_rss, case: RestCase):
    r = rest.post(case.path + case.query, **case.request_kwargs())
    status, code = case.expect
    OUTCOMES[f"rest:{r.status_code}"] = OUTCOMES.get(f"rest:{r.status_code}", 0) + 1
    assert r.status_code < 500, r.text
    assert r.headers.get("x-request-id")
    if (status, code) == OK:
        assert r.status_code == 200, r.text
        return
    body = r.json()
    assert (r.status_code, body["error"]["code"]) == (status, code), body
    assert_clear(body["error"]["message"])


def call(channel, stub, case: GrpcCase):
    """The RPC's answers (a list for the stream), raising grpc.RpcError on a non-OK status."""
    method = getattr(stub, case.rpc)
    if case.rpc == "ReconstructVideo":
        return list(method(iter(case.request()), timeout=60))
    if isinstance(case.request, bytes):  # unparsed wire bytes
        raw = channel.unary_unary(f"/perceiver.v1.Perceiver/{case.rpc}")
        return raw(case.request, timeout=60)
    return method(case.request, timeout=60)


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda c: c.name)
def test_grpc(channel, stub, baseline_rss, case: GrpcCase):
    status, code = case.expect
    try:
        answer = call(channel, stub, case)
    except grpc.RpcError as error:
        got = error.code()
        OUTCOMES[f"grpc:{got.name}"] = OUTCOMES.get(f"grpc:{got.name}", 0) + 1
        assert got not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()
        trailers = dict(error.trailing_metadata() or ())
        assert (got.name, trailers.get("x-error-code")) == (GRPC_CODE_OF[status], code), error.details()
        assert trailers.get("x-request-id")
        assert_clear(error.details())
        return
    OUTCOMES["grpc:OK"] = OUTCOMES.get("grpc:OK", 0) + 1
    assert (status, code) == OK, f"expected {GRPC_CODE_OF[status]} {code}, got OK"
    if case.rpc == "ReconstructVideo":
        assert [m.WhichOneof("kind") for m in answer][-1] == "labels"


def test_a_100_mb_body_is_refused(server, baseline_rss):
    """Sent for real (chunked, so no Content-Length lets it be refused up front): 413 at the 64 MiB limit."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as sock:
        sock.sendall(b"POST /classify/text HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % (1 << 20) + b"a" * (1 << 20) + b"\r\n"
        sent = 0
        try:
            for _ in range(100):
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking all of it
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"too_large"' in reply
    OUTCOMES["rest:413"] = OUTCOMES.get("rest:413", 0) + 1


def test_a_grpc_message_over_the_limit_is_refused(stub, baseline_rss):
    image = b"\x89PNG\r\n\x1a\n" + bytes(65 << 20)  # over the default 64 MiB message limit
    with pytest.raises(grpc.RpcError) as info:
        stub.ClassifyImage(pb.ClassifyImageRequest(image=image), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    OUTCOMES["grpc:RESOURCE_EXHAUSTED"] = OUTCOMES.get("grpc:RESOURCE_EXHAUSTED", 0) + 1


def test_after_the_corpus_the_server_still_serves_and_did_not_balloon(server, rest, stub, baseline_rss):
    assert rest.get("/health/ready").status_code == 200
    r = rest.post("/classify/text", json={"text": "still here"})
    assert r.status_code == 200 and r.json()["results"][0]["predictions"]
    reply = stub.ClassifyText(pb.ClassifyTextRequest(texts=["still here"]))
    assert reply.results[0].predictions[0].label == r.json()["results"][0]["predictions"][0]["label"]
    grown = rss_bytes(server.process.pid) - baseline_rss
    print(f"\nhostile corpus: {sum(OUTCOMES.values())} cases, outcomes {dict(sorted(OUTCOMES.items()))}; "
          f"server RSS {baseline_rss / 2**20:.0f} MiB -> {(baseline_rss + grown) / 2**20:.0f} MiB")
    assert not any(key.endswith(("500", "INTERNAL", "UNKNOWN")) for key in OUTCOMES)
    assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.0f} MiB over the corpus"
    assert "Traceback" not in server.logs()
