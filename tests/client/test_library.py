"""The library itself: async and sync clients, retries on a full queue, the API key, cancelling a stream."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys

import pytest

from benchmarks.servers import demo_model, write_repository
from perceiver_serve.client import AsyncClient, ClassificationResponse, Client, InputError, PerceiverError
from perceiver_serve.client.cli import main
from perceiver_serve.client.media import InputVideo

from ..grpc.conftest import API_KEY, settings_for
from ..grpc.inprocess import InProcessServer
from ..grpc.inprocess import write_repository as write_video_repository
from ..grpc.test_video import settled
from ..reliability.tls import client_context, self_signed
from ..support import ServerProcess
from .clips import make_clip

LONG_TEXT = "a fairly long review of a film that goes on and on " * 30


async def test_async_and_sync_clients_give_the_rest_answer(process, rest):
    expected = rest.post("/classify/text", json={"texts": ["I loved it"], "top_k": 2}).json()
    async with AsyncClient(process.url) as client:
        answer = await client.classify_text("I loved it", top_k=2)
    assert isinstance(answer, ClassificationResponse)
    assert answer.model_dump(exclude_unset=True) == expected
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}", use_grpc=True) as client:
        assert client.classify_text(["I loved it"], top_k=2).model_dump(exclude_unset=True) == expected


async def test_errors_carry_code_message_and_request_id(process):
    async with AsyncClient(process.url) as client:
        with pytest.raises(PerceiverError) as failure:
            await client.classify_text("", model="text-sentiment")
    error = failure.value
    assert (error.code, error.status) == ("empty_text", "400") and error.request_id and error.message


@pytest.fixture(scope="module")
def queue_of_one(tmp_path_factory):
    """Over TLS, with an API key: a text classifier that batches one request and queues one more."""
    tmp = tmp_path_factory.mktemp("queue")
    spec = {**demo_model("text-sentiment"), "batching": {"max_batch_size": 1, "max_queue": 1, "max_delay_ms": 0}}
    root = write_repository(tmp / "repo", {"text-sentiment": spec})
    cert, key = self_signed(tmp)
    with ServerProcess("--api-key", API_KEY, "--tls-cert", str(cert), "--tls-key", str(key), repository=root,
                       grpc=True) as proc:
        proc.wait(verify=client_context(cert))
        proc.cert = cert
        yield proc
        assert proc.stop() == 0, proc.logs()


def secure(server, **options) -> dict:
    """Client options for the TLS server: its address, and its certificate as the CA to trust."""
    return dict(grpc_address=f"127.0.0.1:{server.grpc_port}", tls=True, ca=str(server.cert), **options)


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
async def test_a_full_queue_is_retried_after_the_time_the_server_asks(queue_of_one, use_grpc):
    options = secure(queue_of_one, use_grpc=use_grpc, api_key=API_KEY)

    async def burst(retries: int) -> list:
        async with AsyncClient(queue_of_one.url, retries=retries, **options) as client:
            return await asyncio.gather(*(client.classify_text(LONG_TEXT) for _ in range(12)), return_exceptions=True)

    refused = [r for r in await burst(0) if isinstance(r, PerceiverError)]
    assert refused, "a burst of 12 never filled a queue of 1"
    assert {(e.code, e.retry_after) for e in refused} == {("queue_full", 1.0)}
    answers = await burst(20)
    assert all(isinstance(a, ClassificationResponse) for a in answers), answers


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_the_api_key(queue_of_one, monkeypatch, use_grpc):
    options = secure(queue_of_one, use_grpc=use_grpc)
    monkeypatch.delenv("PERCEIVER_API_KEY", raising=False)
    with Client(queue_of_one.url, **options) as client, pytest.raises(PerceiverError) as failure:
        client.list_models()
    assert failure.value.code == "unauthenticated"
    monkeypatch.setenv("PERCEIVER_API_KEY", API_KEY)  # the environment supplies it
    with Client(queue_of_one.url, **options) as client:
        assert [m.name for m in client.list_models().models] == ["text-sentiment"]


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_health_needs_no_key(queue_of_one, monkeypatch, use_grpc):
    """Health is open on both transports (gRPC's ListModels, which adds each model's state, needs the key)."""
    monkeypatch.delenv("PERCEIVER_API_KEY", raising=False)
    with Client(queue_of_one.url, **secure(queue_of_one, use_grpc=use_grpc)) as client:
        assert client.health().status == "ready"


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_what_cannot_be_sent_is_an_invalid_request_on_either_transport(process, use_grpc):
    """Arguments the request can't encode (a wrong type, a number out of range, text that isn't Unicode) fail
    as a PerceiverError ``invalid_request``, as the server's refusal would, never as a raw encoding error."""
    calls = [lambda c: c.classify_text(["a"], top_k=2 ** 40), lambda c: c.classify_text([1, 2]),
             lambda c: c.classify_text(["a\ud800b"]), lambda c: c.fill_mask("abc", mask_spans=[(0, 1, 2)])]
    if use_grpc:  # REST sends these and the server refuses them (422)
        calls += [lambda c: c.classify_text(["a"], top_k=-1), lambda c: c.fill_mask("abc", mask_spans=[(-1, 2)])]
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}", use_grpc=use_grpc) as client:
        for i, call in enumerate(calls):
            with pytest.raises(PerceiverError) as failure:
                call(client)
            assert failure.value.code in ("invalid_request", "invalid_input") and failure.value.bad_input, (i, failure.value)


def test_every_failure_is_a_perceiver_error(process, tmp_path):
    """A missing local file, an API key no header can carry, a timeout that isn't positive: PerceiverError."""
    for options in ({"api_key": "кл\u044eч"}, {"api_key": "bad\nkey"}, {"timeout": -5}, {"timeout": 0}):
        with pytest.raises(PerceiverError) as failure:
            Client(process.url, **options)
        assert failure.value.code == "invalid_request" and failure.value.bad_input, options
    with Client(process.url) as client:
        with pytest.raises(PerceiverError) as failure:
            client.classify_image(tmp_path / "nope.png")
        assert isinstance(failure.value, InputError) and failure.value.bad_input


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_tls_needs_the_servers_ca(queue_of_one, capsys, transport):
    flags = ["--url", queue_of_one.url, "--grpc-address", f"127.0.0.1:{queue_of_one.grpc_port}", "--tls",
             "--api-key", API_KEY, "--timeout", "10", *transport]
    assert main([*flags, "--ca", str(queue_of_one.cert), "classify-text", "hi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "text-sentiment"
    assert main([*flags, "classify-text", "hi"]) == 1  # the system's CAs do not know a self-signed certificate
    assert "unreachable" in capsys.readouterr().err


# -- cancelling a stream stops the server's decoding -------------------------------------------------

@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    server = InProcessServer(settings_for(write_video_repository(tmp_path_factory.mktemp("video"),
                                                                 "video-autoencoder"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", seconds=2.4, height=48, width=48)  # 60 frames


def test_leaving_the_stream_early_stops_the_decoding(video_server, long_clip):
    runner = video_server.served("video-autoencoder").runner
    before = runner.decoded_chunks
    with Client(grpc_address=video_server.address, use_grpc=True, api_key=API_KEY) as client:
        _, geometry = client.video_geometry()
        stream = client.reconstruct_video(InputVideo(long_clip).pieces(geometry), chunks_per_window=64, windows=False)
        for count, _ in enumerate(stream):
            if count == 5:
                break
        stream.close()
    assert settled(lambda: runner.decoded_chunks) - before < 15 * 65 // 2, "decoding ran on after the cancel"


#: A line of gRPC's C-core log ("E1205 23:30:00.967173   18092 ev_epoll1_linux.cc:373] ...").
GRPC_CORE_LOG = re.compile(r"[EWID]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def test_ctrl_c_cancels_the_stream_and_leaves_no_file(video_server, long_clip, tmp_path):
    runner = video_server.served("video-autoencoder").runner
    before = runner.decoded_chunks
    client = subprocess.Popen(
        [sys.executable, "-m", "perceiver_serve.client.cli", "--grpc", "--grpc-address", video_server.address,
         "--api-key", API_KEY, "reconstruct", str(long_clip), "-o", str(tmp_path / "out.mp4"),
         "--labels", str(tmp_path / "labels.json"), "--chunks-per-window", "64"], stderr=subprocess.PIPE, text=True,
        # the client must see Ctrl-C even where this test process was started with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = client.stderr.readline()
    while GRPC_CORE_LOG.match(first):  # gRPC's C core may log first ("epoll_wait error: Bad file descriptor")
        first = client.stderr.readline()
    assert first.startswith("window 1/"), first + client.stderr.read()
    client.send_signal(signal.SIGINT)
    assert client.wait(60) == 130, client.stderr.read()
    assert "cancelled" in client.stderr.read()
    assert settled(lambda: runner.decoded_chunks) - before < 15 * 65 // 2, "decoding ran on after Ctrl-C"
    assert list(tmp_path.iterdir()) == []


def test_a_source_that_fails_mid_stream_ends_the_stream_with_its_own_error(process, mp4):
    """A file that stops decoding part-way: the caller gets that error, not a gRPC one, and the call is cancelled."""
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}") as client:
        _, geometry = client.video_geometry()

        def pieces():
            source = InputVideo(mp4).pieces(geometry)
            yield next(source)
            yield next(source)
            raise InputError("in.mp4: cannot be decoded (Invalid data found when processing input)")

        with pytest.raises(InputError, match="cannot be decoded"):
            for _ in client.reconstruct_video(pieces()):
                pass


def test_models_over_grpc_carry_the_rest_numbers(process, rest):
    """ListModels' options and geometry travel as a Struct, whose numbers are doubles: the client gives whole
    ones back as ints, so both transports give the same values of the same types."""
    expected = {m["name"]: (m.get("options"), m.get("geometry")) for m in rest.get("/models").json()["models"]}
    with Client(process.url, grpc_address=f"127.0.0.1:{process.grpc_port}", use_grpc=True) as client:
        got = {m.name: (m.options, m.geometry) for m in client.list_models().models}
    assert got == expected
    ints = [(name, key) for name, pair in expected.items() for table in pair if table
            for key, value in table.items() if isinstance(value, int)]
    assert ints and all(isinstance({**(got[name][0] or {}), **(got[name][1] or {})}[key], int) for name, key in ints)


@pytest.mark.parametrize("status, trailers, deadline_passed, want", [
    ("INTERNAL", (), True, "deadline_exceeded"),  # gRPC's own failure once the deadline had passed
    ("INTERNAL", (), False, "internal"),  # before the deadline: what gRPC said
    ("INTERNAL", (("x-request-id", "ab" * 16),), True, "internal"),  # the server's own answer: never relabelled
    ("DEADLINE_EXCEEDED", (), True, "deadline_exceeded"),
])
def test_a_stream_failed_by_grpc_after_its_deadline_is_a_deadline(status, trailers, deadline_passed, want):
    import grpc

    from perceiver_serve.client.grpc_transport import grpc_error

    failure = grpc.aio.AioRpcError(grpc.StatusCode[status], grpc.aio.Metadata(), grpc.aio.Metadata(*trailers),
                                   details="Internal error from Core")
    error = grpc_error(failure, "127.0.0.1:1", deadline_passed=deadline_passed)
    assert error.code == want
    assert error.status == ("DEADLINE_EXCEEDED" if want == "deadline_exceeded" else status)
