"""Load generator of the server benchmark, run in its own process (loopback only).

``python -m benchmarks.loadgen sweep --endpoint text --target on=http://127.0.0.1:8000#text-mid ...``
drives each target with N closed-loop clients (each sends its next request when its last
one is answered) for every concurrency level, targets interleaved level by level so that
load from other work on the machine hits them alike. A level ends after ``--requests``
requests or ``--duration`` seconds, whichever comes first (requests in flight then are
awaited and counted). Every answer is checked (status 200 and a well-formed body). Where a
target names its model (``#model``), the mean batch size comes from the server's
``perceiver_batch_size`` histogram, read before and after the level.

``python -m benchmarks.loadgen overhead --url URL --grpc-port P --model M`` times sequential
requests over REST and gRPC, answered and rejected ones (an empty text), interleaved.

Both print one JSON document on stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np

#: ≈100-byte texts of a few lengths (so batches pad, as real traffic does).
TEXTS = [
    "The service was quick and the staff were friendly; I would happily come back here next week.",
    "Delivery took three weeks, the box arrived crushed and nobody answered my emails about a refund at all.",
    "An ordinary film: good actors, a thin plot, and an ending you can see coming from the first scene on.",
    "Battery life is excellent, the screen is sharp, but the speakers sound tinny at any volume.",
]

Check = Callable[[aiohttp.ClientSession], Awaitable[None]]


class BadAnswer(Exception):
    """An answer that is not a success or not well-formed: counted as a failed request."""


def _say(message: str) -> None:
    print(f"[loadgen] {message}", file=sys.stderr, flush=True)


def check_classification(body: Any) -> None:
    try:
        (result,) = body["results"]
        predictions = result["predictions"]
        ok = bool(predictions) and all(0.0 <= p["score"] <= 1.0 and isinstance(p["label"], str)
                                       for p in predictions)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadAnswer(f"malformed classification: {exc!r}") from None
    if not ok or not isinstance(body.get("model"), str):
        raise BadAnswer("malformed classification")


async def _json_answer(response: aiohttp.ClientResponse) -> Any:
    if response.status != 200:
        raise BadAnswer(f"HTTP {response.status}")
    try:
        return await response.json()
    except (aiohttp.ContentTypeError, json.JSONDecodeError) as exc:
        raise BadAnswer(f"not JSON: {exc!r}") from None


JSON = {"content-type": "application/json"}


def json_body(value: Any) -> bytes:
    """A request body encoded once, up front, and sent in the same write as the headers (aiohttp's
    ``json=`` encodes per request and writes the body apart)."""
    return json.dumps(value).encode()


def png(height: int, width: int, seed: int) -> bytes:
    """A smooth synthetic RGB image (gradients and a moving blob), PNG-encoded."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * (0.3 + 0.05 * seed), width * (0.4 + 0.05 * seed)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 * height * width))
    rgb = np.stack([x / width, y / height, blob], axis=-1) * 255
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_request(endpoint: str, url: str, model: str | None, args: argparse.Namespace) -> Check:
    """One request of ``endpoint`` against ``url``, checking its answer (raises :class:`BadAnswer`)."""
    if endpoint == "text":
        bodies = [json_body({"text": t, **({"model": model} if model else {})}) for t in TEXTS]
        counter = iter(range(1 << 62))

        async def text(session: aiohttp.ClientSession) -> None:
            body = bodies[next(counter) % len(bodies)]
            async with session.post(url + "/classify/text", data=body, headers=JSON) as response:
                check_classification(await _json_answer(response))
        return text
    if endpoint == "image":
        image = png(args.image_size, args.image_size, 0)
        params = {"model": model} if model else {}

        async def classify_image(session: aiohttp.ClientSession) -> None:
            async with session.post(url + "/classify/image", data=image, params=params,
                                    headers={"content-type": "image/png"}) as response:
                check_classification(await _json_answer(response))
        return classify_image
    if endpoint == "flow":
        height, width = args.flow_size
        frames = png(height, width, 0), png(height, width, 1)

        async def flow(session: aiohttp.ClientSession) -> None:
            form = aiohttp.FormData()
            form.add_field("frame1", frames[0], filename="1.png", content_type="image/png")
            form.add_field("frame2", frames[1], filename="2.png", content_type="image/png")
            if model:
                form.add_field("model", model)
            async with session.post(url + "/flow", data=form) as response:
                if response.status != 200:
                    raise BadAnswer(f"HTTP {response.status}")
                data = await response.read()
            try:
                field = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:
                raise BadAnswer(f"not an npy array: {exc}") from None
            if field.shape != (height, width, 2) or not np.isfinite(field).all():
                raise BadAnswer(f"flow of shape {field.shape}, expected {(height, width, 2)}")
        return flow
    raise ValueError(f"unknown endpoint {endpoint!r}")


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max of latencies given in seconds, in milliseconds (None when there are none)."""
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ms = np.asarray(seconds) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(ms.mean()),
            "max": float(ms.max())}


async def batch_counts(session: aiohttp.ClientSession, url: str, model: str) -> tuple[float, float]:
    """``(sum, count)`` of the server's ``perceiver_batch_size`` histogram for ``model``."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(url + "/metrics") as response:
        text = await response.text()
    found = {"perceiver_batch_size_sum": 0.0, "perceiver_batch_size_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found and sample.labels.get("model") == model:
                found[sample.name] = sample.value
    return found["perceiver_batch_size_sum"], found["perceiver_batch_size_count"]


async def run_level(session: aiohttp.ClientSession, request: Check, url: str, model: str | None,
                    concurrency: int, max_requests: int, duration: float) -> dict[str, Any]:
    # Every client opens its connection first (a cheap GET), so the timed part reuses them.
    async def connect() -> None:
        async with session.get(url + "/health/live") as response:
            await response.read()

    await asyncio.gather(*(connect() for _ in range(concurrency)))
    before = await batch_counts(session, url, model) if model else None
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    issued = 0
    start, cpu = time.perf_counter(), time.process_time()
    stop_at = start + duration

    async def client() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < stop_at:
            issued += 1
            sent = time.perf_counter()
            try:
                await request(session)
            except BadAnswer as exc:
                errors[str(exc)] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[type(exc).__name__] += 1
            else:
                latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    result: dict[str, Any] = {
        "concurrency": concurrency, "requests": issued, "ok": len(latencies), "failed": sum(errors.values()),
        "errors": dict(errors), "duration_s": elapsed, "throughput_rps": len(latencies) / elapsed,
        # The load generator shares the machine's cores with the server: what it spends is not
        # the server's to use.
        "loadgen_cpu_ms_per_request": 1000 * cpu / issued if issued else None,
        "latency_ms": percentiles_ms(latencies),
        "forward_passes": None, "mean_batch_size": None,
    }
    if model:
        after = await batch_counts(session, url, model)
        items, passes = after[0] - before[0], after[1] - before[1]
        result["forward_passes"] = passes
        result["mean_batch_size"] = items / passes if passes else None
    return result


def parse_target(text: str) -> tuple[str, str, str | None]:
    """``label=url[#model]`` → ``(label, url, model)``."""
    label, _, rest = text.partition("=")
    url, _, model = rest.partition("#")
    if not label or not url.startswith("http://127.0.0.1:"):
        raise argparse.ArgumentTypeError(f"expected label=http://127.0.0.1:PORT[#model], got {text!r}")
    return label, url.rstrip("/"), model or None


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in args.target}
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    sessions = {label: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
                for label, _, _ in args.target}
    try:
        for concurrency in args.levels:
            for label, url, model in args.target:
                request = make_request(args.endpoint, url, model, args)
                level = await run_level(sessions[label], request, url, model, concurrency, args.requests,
                                        args.duration)
                results[label].append(level)
                batch = level["mean_batch_size"]
                _say(f"{args.endpoint:5s} {label:8s} c={concurrency:<3d} {level['throughput_rps']:8.1f} req/s  "
                     f"p50 {level['latency_ms']['p50'] or 0:8.1f} ms  p95 {level['latency_ms']['p95'] or 0:8.1f} ms  "
                     f"failed {level['failed']}" + (f"  batch {batch:.2f}" if batch else ""))
    finally:
        for session in sessions.values():
            await session.close()
    return {"endpoint": args.endpoint, "levels": args.levels, "results": results}


async def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Median latency of sequential answered and rejected ClassifyText calls over REST and gRPC."""
    import grpc
    from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
    from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc as pb_grpc

    text = TEXTS[0]
    async with aiohttp.ClientSession() as session, \
            grpc.aio.insecure_channel(f"127.0.0.1:{args.grpc_port}") as channel:
        stub = pb_grpc.PerceiverStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 30)

        async def rest(body_text: str, expect: int) -> None:
            body = json_body({"text": body_text, "model": args.model})
            async with session.post(args.url + "/classify/text", data=body, headers=JSON) as r:
                body = await r.json()
                if r.status != expect:
                    raise BadAnswer(f"HTTP {r.status}, expected {expect}")
            if expect == 200:
                check_classification(body)
            elif body.get("error", {}).get("code") != "empty_text":
                raise BadAnswer(f"unexpected error body {body}")

        async def rpc(body_text: str, expect: grpc.StatusCode) -> None:
            try:
                answer = await stub.ClassifyText(pb.ClassifyTextRequest(texts=[body_text], model=args.model))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != expect:
                    raise BadAnswer(f"gRPC {exc.code().name}, expected {expect.name}") from None
                return
            if expect != grpc.StatusCode.OK or len(answer.results) != 1 or not answer.results[0].predictions:
                raise BadAnswer("unexpected gRPC answer")

        kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "rest_classify": lambda: rest(text, 200),
            "grpc_classify": lambda: rpc(text, grpc.StatusCode.OK),
            "rest_rejected": lambda: rest("", 400),
            "grpc_rejected": lambda: rpc("", grpc.StatusCode.INVALID_ARGUMENT),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        failed: collections.Counter[str] = collections.Counter()
        for i in range(args.warmup + args.requests):
            for name, call in kinds.items():
                sent = time.perf_counter()
                try:
                    await call()
                except (BadAnswer, aiohttp.ClientError) as exc:
                    failed[name] += 1
                    _say(f"overhead {name}: {exc}")
                    continue
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - sent)
    result = {name: {"requests": len(t), "failed": failed[name],
                     **percentiles_ms(t)}
              for name, t in times.items()}
    for name, r in result.items():
        _say(f"overhead {name:14s} median {r['p50']:.2f} ms  p95 {r['p95']:.2f} ms  failed {r['failed']}")
    return {"model": args.model, "text_bytes": len(text.encode()), "latency_ms": result}


def size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="closed-loop concurrency sweep against one or more targets")
    s.add_argument("--endpoint", choices=["text", "image", "flow"], required=True)
    s.add_argument("--target", type=parse_target, action="append", required=True, help="label=URL[#model]")
    s.add_argument("--levels", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8, 16, 32, 64])
    s.add_argument("--requests", type=int, default=400, help="most requests per level and target")
    s.add_argument("--duration", type=float, default=10.0, help="seconds per level and target, at most")
    s.add_argument("--request-timeout", type=float, default=120.0)
    s.add_argument("--image-size", type=int, default=224)
    s.add_argument("--flow-size", type=size, default=(48, 64), help="HEIGHTxWIDTH of the flow frames")
    o = sub.add_parser("overhead", help="sequential REST vs gRPC latency, answered and rejected")
    o.add_argument("--url", required=True)
    o.add_argument("--grpc-port", type=int, required=True)
    o.add_argument("--model", required=True)
    o.add_argument("--requests", type=int, default=300)
    o.add_argument("--warmup", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = asyncio.run(sweep(args) if args.command == "sweep" else overhead(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
