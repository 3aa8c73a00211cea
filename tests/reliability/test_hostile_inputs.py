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


@pytest.fixture(scope="module")
def baseline_rss(server, rest, stub):
    """The server's RSS once it has served one good request of each kind."""
    assert rest.post("/classify/text", json={"text": "warm"}).status_code == 200
    stub.ClassifyText(pb.ClassifyTextRequest(texts=["warm"]))
    return rss_bytes(server.process.pid)


@pytest.fixture(scope="module")
def corpus(rest, channel, stub, baseline_rss) -> dict[tuple[str, int], object]:
    """Every case of the corpus sent once (whichever test asks first): its reply, or its gRPC error.

    The per-case tests check their own reply; the after-the-corpus check has the whole corpus
    behind it even when it runs alone.
    """
    replies: dict[tuple[str, int], object] = {}  # by protocol and id(case): some names repeat
    for case in REST_CASES:
        replies["rest", id(case)] = rest.post(case.path + case.query, **case.request_kwargs())
    for case in GRPC_CASES:
        try:
            replies["grpc", id(case)] = call(channel, stub, case)
        except grpc.RpcError as error:
            replies["grpc", id(case)] = error
    return replies


def outcomes(replies: dict[tuple[str, int], object]) -> dict[str, int]:
    """How many replies had each status, as ``rest:413`` or ``grpc:INVALID_ARGUMENT``."""
    counts: dict[str, int] = {}
    for (protocol, _), reply in replies.items():
        if protocol == "rest":
            status = f"rest:{reply.status_code}"
        else:
            status = f"grpc:{reply.code().name}" if isinstance(reply, grpc.RpcError) else "grpc:OK"
        counts[status] = counts.get(status, 0) + 1
    return counts


def assert_clear(message: str) -> None:
    assert message and len(message) <= MAX_MESSAGE_CHARS, message
    assert "Traceback" not in message and "internal error" not in message, message


@pytest.mark.parametrize("case", REST_CASES, ids=lambda c: c.name)
def test_rest(corpus, case: RestCase):
    r = corpus["rest", id(case)]
    status, code = case.expect
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
def test_grpc(corpus, case: GrpcCase):
    status, code = case.expect
    answer = corpus["grpc", id(case)]
    if isinstance(answer, grpc.RpcError):
        error = answer
        got = error.code()
        assert got not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()
        trailers = dict(error.trailing_metadata() or ())
        assert (got.name, trailers.get("x-error-code")) == (GRPC_CODE_OF[status], code), error.details()
        assert trailers.get("x-request-id")
        assert_clear(error.details())
        return
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


def test_a_grpc_message_over_the_limit_is_refused(stub, baseline_rss):
    image = b"\x89PNG\r\n\x1a\n" + bytes(65 << 20)  # over the default 64 MiB message limit
    with pytest.raises(grpc.RpcError) as info:
        stub.ClassifyImage(pb.ClassifyImageRequest(image=image), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_after_the_corpus_the_server_still_serves_and_did_not_balloon(server, rest, stub, baseline_rss, corpus):
    counts = outcomes(corpus)
    assert sum(counts.values()) == len(REST_CASES) + len(GRPC_CASES)
    assert rest.get("/health/ready").status_code == 200
    r = rest.post("/classify/text", json={"text": "still here"})
    assert r.status_code == 200 and r.json()["results"][0]["predictions"]
    reply = stub.ClassifyText(pb.ClassifyTextRequest(texts=["still here"]))
    assert reply.results[0].predictions[0].label == r.json()["results"][0]["predictions"][0]["label"]
    grown = rss_bytes(server.process.pid) - baseline_rss
    print(f"\nhostile corpus: {sum(counts.values())} cases, outcomes {dict(sorted(counts.items()))}; "
          f"server RSS {baseline_rss / 2**20:.0f} MiB -> {(baseline_rss + grown) / 2**20:.0f} MiB")
    assert not any(key.startswith("rest:5") or key.endswith(("INTERNAL", "UNKNOWN")) for key in counts), counts
    assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.0f} MiB over the corpus"
    assert "Traceback" not in server.logs()
