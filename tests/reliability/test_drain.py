"""SIGTERM under load: in-flight requests finish, new ones are refused, the process exits 0 in time.

Clients keep sending over REST (kept-alive connections, as real clients do) and gRPC while
the signal arrives; slow flow requests are in flight at that moment. Every request ends in
exactly one of: a full, valid answer; a clean refusal (connection refused, 503, gRPC
UNAVAILABLE, or a kept-alive connection closed or reset before any byte of an answer). Nothing
is a 5xx, and the server's own access log proves nothing it accepted was lost: it answered
exactly as many requests as the clients received answers.

A kept-alive HTTP/1.1 connection that the server closes while idle can cross a request the
client is just sending; the kernel then resets it (the request was never read). That race is
inherent to HTTP keep-alive (RFC 9112 §9.3.1), so such a reset counts as a refusal, and the
log comparison is what shows it was not an accepted request cut off.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import threading
import time
from collections import Counter

import aiohttp
import grpc
import numpy as np

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..api.conftest import png_bytes
from ..support import ServerProcess
from .repository import repository
from .test_load import post

GRACE_S = 30
#: 9 tiles (3 x 3 of the demo model's 48 x 64): about 0.25 s each on an AMX Xeon's two cores, 0.6 s on an
#: AVX2 EPYC's, where two requests of 25 tiles and the text clients beside them outlasted a grace of 20 s.
FLOW_FRAME = np.random.default_rng(9).integers(0, 256, (104, 152, 3), dtype=np.uint8)


def reset(exc: BaseException | None) -> bool:
    """Whether a client error is the connection being reset or closed under a request being sent.

    aiohttp reports it as ECONNRESET/EPIPE, or, when it saw the server's close first, as
    "Can not write request body" (no errno) caused by a ConnectionResetError.
    """
    while exc is not None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or \
                getattr(exc, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
            return True
        exc = exc.__cause__
    return False


async def rest_clients(url: str, stop_after: float, outcomes: Counter, problems: list[str]) -> None:
    async def text_client(n: int) -> None:
        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as session:
            i = 0
            while True:
                i += 1
                try:
                    r = await post(session, "/classify/text", body={"text": f"client {n} request {i}"})
                except aiohttp.ClientConnectorError:
                    outcomes["rest refused (connect)"] += 1
                    return
                except aiohttp.ServerDisconnectedError:
                    outcomes["rest refused (kept-alive connection closed before an answer)"] += 1
                    continue  # the next request opens a new connection, or is refused
                except aiohttp.ClientOSError as exc:
                    if not reset(exc):
                        problems.append(f"text: {type(exc).__name__}: {exc}")
                        return
                    outcomes["rest refused (kept-alive connection reset before an answer)"] += 1
                    continue
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    problems.append(f"text: {type(exc).__name__}: {exc}")
                    return
                if r.status == 503:
                    outcomes["rest refused (503)"] += 1
                    continue
                if r.status != 200 or len(r.json()["results"][0]["predictions"]) != 2:
                    problems.append(f"text: {r.status} {r.body[:200]!r}")
                    return
                outcomes["rest answered"] += 1
                if time.monotonic() > stop_after:
                    return

    async def flow_client() -> None:
        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as session:
            frame = png_bytes(FLOW_FRAME)
            r = await post(session, "/flow", files={"frame1": frame, "frame2": frame})
            if r.status == 200 and r.headers["x-flow-height"] == "104":
                outcomes["rest slow flow answered"] += 1
            else:
                problems.append(f"flow: {r.status} {r.body[:200]!r}")

    await asyncio.gather(*(text_client(n) for n in range(24)), flow_client(), flow_client())


def grpc_client(address: str, stop_after: float, outcomes: Counter, problems: list[str]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = perceiver_pb2_grpc.PerceiverStub(channel)
        while time.monotonic() < stop_after:
            try:
                reply = stub.ClassifyText(pb.ClassifyTextRequest(texts=["grpc during drain"]), timeout=30)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    outcomes["grpc refused (UNAVAILABLE)"] += 1
                    return
                problems.append(f"grpc: {error.code()} {error.details()}")
                return
            assert len(reply.results[0].predictions) == 2
            outcomes["grpc answered"] += 1


def test_sigterm_under_load_drains_cleanly(tmp_path):
    root = repository(tmp_path / "repo", "text-sentiment", "optical-flow")
    with ServerProcess("--grace-period", str(GRACE_S), grpc=True, repository=root) as proc:
        proc.wait()
        outcomes, problems = Counter(), []
        stop_after = time.monotonic() + 60
        grpc_threads = [threading.Thread(target=grpc_client, args=(f"127.0.0.1:{proc.grpc_port}", stop_after,
                                                                   outcomes, problems)) for _ in range(4)]
        for thread in grpc_threads:
            thread.start()

        async def load_then_terminate() -> float:
            clients = asyncio.create_task(rest_clients(proc.url, stop_after, outcomes, problems))
            await asyncio.sleep(1.0)
            signalled = time.monotonic()
            os.kill(proc.process.pid, signal.SIGTERM)
            await clients
            return signalled

        signalled = asyncio.run(load_then_terminate())
        for thread in grpc_threads:
            thread.join(60)
        code = proc.process.wait(GRACE_S + 10)
        exited_after = time.monotonic() - signalled
    print(f"\ndrain: outcomes {dict(outcomes)}; exit {code} {exited_after:.1f} s after SIGTERM")
    assert problems == [], problems[:10]
    assert code == 0 and exited_after < GRACE_S + 5
    assert outcomes["rest slow flow answered"] == 2  # in flight at SIGTERM, finished
    assert outcomes["rest answered"] > 0 and outcomes["grpc answered"] > 0
    assert outcomes["rest refused (connect)"] == 24 and outcomes["grpc refused (UNAVAILABLE)"] == 4
    logs = proc.logs()
    assert "draining" in logs and "Traceback" not in logs
    # Everything the server accepted and answered, its clients received.
    assert len(re.findall(r"POST /classify/text 200 ", logs)) == outcomes["rest answered"]
    assert len(re.findall(r"grpc ClassifyText OK ", logs)) == outcomes["grpc answered"]


def test_a_request_still_running_when_the_grace_period_ends_gets_a_clean_refusal(tmp_path):
    """The grace period over, uvicorn cancels what is still running: the client gets 503 shutting_down with
    its request id (as a draining server refuses), not a bare 500, and the process exits."""
    import httpx

    # Batches of 32 tiles (8 s or more on two cores): one is still computing when the process exits.
    root = repository(tmp_path / "repo", "optical-flow", **{"optical-flow": {"max_batch_size": 32}})
    big = np.random.default_rng(4).integers(0, 256, (600, 600, 3), dtype=np.uint8)  # hundreds of tiles
    files = {"frame1": ("1.png", png_bytes(big)), "frame2": ("2.png", png_bytes(np.roll(big, 2, 1)))}
    with ServerProcess("--grace-period", "1", repository=root) as proc:
        proc.wait()
        answer: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: answer.append(httpx.post(proc.url + "/flow", files=files, timeout=60)))
        sender.start()
        time.sleep(1.5)  # decoded and computing
        os.kill(proc.process.pid, signal.SIGTERM)
        sender.join(60)
        code = proc.process.wait(30)
        logs = proc.logs()
    (refused,) = answer
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "shutting_down" and refused.headers["x-request-id"]
    assert code == 0 and "grace period ran out" in logs and "Traceback" not in logs
    # The batch still computing is left behind, without the interpreter's teardown under it (which aborted: -6).
    assert "still computing; exiting without waiting" in logs and "terminate called" not in logs
