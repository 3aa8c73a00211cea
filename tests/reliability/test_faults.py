"""Faults inside a real server (uvicorn and grpc.aio in this process): a model that throws,
runs out of memory, or whose client goes away mid-request.

Faults are injected by wrapping a served model's ``runner.run``; nothing in the server knows.
A model that fails to load is in test_security.py (its checkpoint carries a pickle payload).
Mid-stream cancellation of ReconstructVideo is tests/grpc/test_video.py::test_cancelling_stops_decoding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import torch

from perceiver_serve.modeling import ByteTokenizer, load_model
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc
from perceiver_serve.settings import Settings

from ..api.conftest import png_bytes
from ..numerics import FP32, assert_close, distinguishable
from ..reactive import reactive_models
from .inprocess import InProcessRestAndGrpc
from .repository import repository

TEXT, FLOW = "text-sentiment", "optical-flow"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = repository(tmp_path_factory.mktemp("faults"), TEXT, FLOW,
                      **{TEXT: {"max_delay_ms": 60, "max_batch_size": 8}, FLOW: {"max_batch_size": 4}})
    server = InProcessRestAndGrpc(Settings(model_repository=root, grpc_port=0)).start()
    yield server
    server.stop()


@pytest.fixture()
def faulty(live, monkeypatch):
    """Wrap ``runner.run`` of a served model with ``fault(payloads)`` (which may raise); record every call."""
    calls: list[tuple[list, BaseException | None]] = []

    def install(name: str, fault):
        runner = live.served(name).runner
        run = runner.run

        def wrapped(payloads):
            try:
                fault(payloads)
            except BaseException as exc:
                calls.append((list(payloads), exc))
                raise
            calls.append((list(payloads), None))
            return run(payloads)

        monkeypatch.setattr(runner, "run", wrapped)
        return calls

    return install


def text_of(ids: list[int]) -> str:
    return bytes(i - ByteTokenizer.NUM_SPECIAL for i in ids if i >= ByteTokenizer.NUM_SPECIAL).decode()


async def post_texts(url: str, texts: list[str], **fields) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(client.post("/classify/text", json={"text": t, **fields}) for t in texts))


def direct_logits(texts: list[str]) -> np.ndarray:
    """Each text's logits computed alone, in this process, from the served checkpoint."""
    model = load_model(reactive_models() / TEXT / "checkpoint")
    tokenizer = ByteTokenizer(model.config.max_position_embeddings)
    with torch.no_grad():
        return np.stack([model(torch.tensor([tokenizer.encode(t)]))[0].double().numpy() for t in texts])


def test_a_forward_that_raises_fails_only_the_requests_of_its_batch(live, faulty, caplog):
    def poisoned(payloads):
        if any("POISON" in text_of(ids) for ids in payloads):
            raise RuntimeError("injected fault in the forward pass")

    calls = faulty(TEXT, poisoned)
    texts = [f"fine text {i}" for i in range(20)] + [f"POISON {i}" for i in range(3)]
    with caplog.at_level(logging.INFO):
        responses = asyncio.run(post_texts(live.url, texts))
    failed = {text_of(ids) for payloads, error in calls if error for ids in payloads}
    assert {t for t in texts if "POISON" in t} <= failed
    for text, r in zip(texts, responses):
        if text in failed:
            request_id = r.headers["x-request-id"]
            assert (r.status_code, r.json()["error"]["code"]) == (500, "inference_failed"), r.text
            assert request_id in r.json()["error"]["message"]
            assert any(getattr(rec, "request_id", None) == request_id and rec.status == 500 for rec in caplog.records)
        else:
            assert r.status_code == 200, r.text
    assert len(failed) < len(texts), "every batch failed: nothing shows the fault was contained"
    assert any("forward pass failed" in rec.getMessage() and rec.exc_info for rec in caplog.records)

    # gRPC, the same model, the same fault; then both protocols still serve.
    with grpc.insecure_channel(live.address) as channel:
        stub = perceiver_pb2_grpc.PerceiverStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ClassifyText(pb.ClassifyTextRequest(texts=["POISON again"]))
        trailers = dict(info.value.trailing_metadata())
        assert info.value.code() == grpc.StatusCode.INTERNAL and trailers["x-request-id"] in info.value.details()
        assert stub.ClassifyText(pb.ClassifyTextRequest(texts=["fine again"])).results
    assert httpx.get(live.url + "/health/ready").status_code == 200
    assert httpx.post(live.url + "/classify/text", json={"text": "fine again"}).status_code == 200


def test_out_of_memory_splits_the_batch_and_retries(live, faulty, caplog):
    def small_batches_only(payloads):
        if len(payloads) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")

    calls = faulty(TEXT, small_batches_only)
    texts = [f"memory hungry text {i}" for i in range(8)]
    with caplog.at_level(logging.WARNING):
        responses = asyncio.run(post_texts(live.url, texts, return_logits=True))
    assert [r.status_code for r in responses] == [200] * len(texts), [r.text for r in responses]
    # Each answer is its own text's, as if computed alone, and another text's answer would show.
    expected = direct_logits(texts)
    assert distinguishable(expected, FP32 * np.abs(expected).max()) == 1.0
    for text, want, r in zip(texts, expected, responses):
        assert_close(r.json()["results"][0]["logits"], want, FP32, text)
    sizes = [(len(payloads), error is not None) for payloads, error in calls]
    assert any(failed for _, failed in sizes), f"no batch of more than 2 formed: {sizes}"
    assert all(size <= 2 for size, failed in sizes if not failed)
    assert sum(size for size, failed in sizes if not failed) == len(texts)
    assert any("retrying in halves" in rec.getMessage() for rec in caplog.records)


def rejected(live, reason: str) -> float:
    return live.metric("perceiver_rejected_requests_total", {"model": FLOW, "reason": reason})


def wait_for_idle(live, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while live.served(name).batcher.queue_depth and time.monotonic() < deadline:
        time.sleep(0.05)


BIG = np.random.default_rng(3).integers(0, 256, (400, 400, 3), dtype=np.uint8)  # 126 tiles of 48×64


@pytest.fixture()
def held_flow(live, faulty):
    """The flow model's first batch is held until the test lets go, so that the client is
    gone while its tiles are still queued however fast this machine computes them."""
    gate = threading.Event()
    calls = faulty(FLOW, lambda payloads: gate.wait(60))
    yield gate, calls
    gate.set()


def _flow_v2(url: str, timeout: float) -> None:
    frames = {"FRAME1": BIG, "FRAME2": np.roll(BIG, 2, 0)}
    header = json.dumps({"inputs": [{"name": name, "datatype": "UINT8", "shape": list(frame.shape),
                                     "parameters": {"binary_data_size": frame.nbytes}}
                                    for name, frame in frames.items()]}).encode()
    httpx.post(f"{url}/v2/models/{FLOW}/infer", content=header + b"".join(f.tobytes() for f in frames.values()),
               headers={"Inference-Header-Content-Length": str(len(header))}, timeout=timeout)


def _flow_rest(url: str, timeout: float) -> None:
    files = {"frame1": ("1.png", png_bytes(BIG)), "frame2": ("2.png", png_bytes(np.roll(BIG, 2, 0)))}
    httpx.post(url + "/flow", files=files, timeout=timeout)


@pytest.mark.parametrize(("endpoint", "protocol", "send"), [("/flow", "rest", _flow_rest),
                                                            ("/v2/models/{model}/infer", "oip", _flow_v2)])
def test_a_rest_client_that_disconnects_frees_its_queued_work(live, held_flow, endpoint, protocol, send):
    """Over REST and the Open Inference Protocol's HTTP side alike: the client gone, its queued tiles are
    dropped and its request counts as 499."""
    gate, calls = held_flow
    before = rejected(live, "cancelled")
    counted = {key: live.metric("perceiver_requests_total", {"model": FLOW, "endpoint": endpoint,
                                                             "protocol": protocol, "status": key})
               for key in ("499", "500", "200")}
    with pytest.raises(httpx.TimeoutException):
        send(live.url, 1.5)
    time.sleep(0.5)
    gate.set()
    wait_for_idle(live, FLOW)
    computed = sum(len(payloads) for payloads, _ in calls)
    dropped = rejected(live, "cancelled") - before
    assert dropped > 0 and computed + dropped == 126, (computed, dropped)
    assert computed < 126 / 2
    statuses = {key: live.metric("perceiver_requests_total", {"model": FLOW, "endpoint": endpoint,
                                                              "protocol": protocol, "status": key}) - counted[key]
                for key in ("499", "500", "200")}
    assert statuses == {"499": 1.0, "500": 0.0, "200": 0.0}


_PART_SENT = [  # (path, content type, the first bytes of a body whose Content-Length promises 4,000)
    ("/classify/text", "application/json", b'{"texts": ["'),
    ("/classify/text", "text/plain", b"a review that never ends"),
    ("/classify/image", "image/png", png_bytes(np.zeros((8, 8, 3), np.uint8))[:40]),
    ("/flow", "multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="frame1"; '
                                                   b'filename="1.png"\r\n\r\n\x89PNG'),
    (f"/v2/models/{TEXT}/infer", "application/json", b'{"inputs": [{"name": "TEXT", '),
]


@pytest.mark.parametrize(("path", "kind", "part"), _PART_SENT, ids=[f"{p} {k.split(';')[0]}" for p, k, _ in _PART_SENT])
def test_a_client_that_goes_while_sending_its_body_is_a_499_not_a_500(live, caplog, path, kind, part):
    """The body's reader meets the disconnect (starlette's ClientDisconnect): counted and logged as the
    client's doing (499), as a disconnect during inference is, never as a server error."""
    import socket

    def count(status: str) -> float:
        return live.metric("perceiver_requests_total", {"model": "", "endpoint": path.replace(TEXT, "{model}"),
                                                        "protocol": "oip" if path.startswith("/v2") else "rest",
                                                        "status": status})

    before = {status: count(status) for status in ("499", "500", "400")}
    with socket.create_connection(("127.0.0.1", live.http_port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                     f"Content-Length: 4000\r\n\r\n".encode() + part)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while count("499") == before["499"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {status: count(status) - before[status] for status in before} == {"499": 1, "500": 0, "400": 0}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _one_answer(sock) -> bytes:
    """One HTTP answer read off ``sock``: its head, then as many body bytes as its Content-Length says."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, answer
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    """A server that waits at most 0.5 s for the next part of a request body."""
    root = repository(tmp_path_factory.mktemp("impatient"), TEXT)
    server = InProcessRestAndGrpc(Settings(model_repository=root, grpc_port=0, body_timeout_s=0.5)).start()
    yield server
    server.stop()


def test_a_body_that_stalls_is_refused_with_408_and_a_slow_but_steady_one_is_read(impatient):
    """A client that sends part of its body and pauses (slowloris) gets 408 ``body_timeout`` once the
    pause passes the limit, and its connection is let go; one whose parts keep coming, each within the
    limit, is answered however long the whole upload takes."""
    import socket

    head = ("POST /classify/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 4000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", impatient.http_port), timeout=10) as sock:
        sock.sendall(head + b'{"texts": ["')
        started = time.monotonic()
        answer = _one_answer(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in answer, answer[:300]
        assert 0.4 < time.monotonic() - started < 5
    labels = {"model": "", "endpoint": "/classify/text", "protocol": "rest", "status": "408"}
    deadline = time.monotonic() + 10  # counted once the answer is sent: a moment after the client reads it
    while impatient.metric("perceiver_requests_total", labels) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert impatient.metric("perceiver_requests_total", labels) == 1.0
    body = b'{"texts": ["' + b"good " * 30 + b'"]}'
    with socket.create_connection(("127.0.0.1", impatient.http_port), timeout=10) as sock:
        sock.sendall(f"POST /classify/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for start in range(0, len(body), 40):  # 0.3 s between parts: 1.2 s in all, more than the limit
            time.sleep(0.3)
            sock.sendall(body[start:start + 40])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_a_grpc_client_that_cancels_frees_its_queued_work(live, held_flow):
    gate, calls = held_flow
    before = rejected(live, "cancelled")
    request = pb.EstimateFlowRequest(frame1=png_bytes(BIG), frame2=png_bytes(np.roll(BIG, 2, 1)))
    with grpc.insecure_channel(live.address) as channel:
        future = perceiver_pb2_grpc.PerceiverStub(channel).EstimateFlow.future(request)
        time.sleep(1.5)
        future.cancel()
    time.sleep(0.5)
    gate.set()
    wait_for_idle(live, FLOW)
    computed = sum(len(payloads) for payloads, _ in calls)
    dropped = rejected(live, "cancelled") - before
    assert dropped > 0 and computed + dropped == 126, (computed, dropped)
    assert live.metric("perceiver_requests_total", {"model": FLOW, "endpoint": "EstimateFlow", "protocol": "grpc",
                                                    "status": "CANCELLED"}) == 1.0
