"""Load with verified answers: 64 concurrent clients, a mixed workload, every answer checked.

Each request carries one of many distinct inputs whose answer was computed alone in this
process with the same checkpoints, so an answer delivered to the wrong caller, or lost, is
caught. Requests may be refused only with 429 and Retry-After; the server's memory after the
run stays within 7% of what it was after a warm-up round of the same mix, both read once its
models have fallen idle and handed their free memory back: read at once, the figure holds whatever
the heaps kept for the next batch (up to 64 MiB, see ``perceiver_serve.allocator``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_serve.engine.batcher import IDLE_AFTER_S
from perceiver_serve.modeling import ByteTokenizer, flow_patches
from perceiver_serve.tasks.image import ImageClassificationRunner, ImageOptions

from ..api.conftest import assert_top_k, direct, model_options, png_bytes  # noqa: F401 - direct is a fixture
from ..numerics import FP32, FP32_PADDED, assert_close, distinguishable
from ..reactive import reactive_models
from ..support import rss_bytes
from ..text_windows import answering_window, context_bytes
from .conftest import SMALL_QUEUE

CLIENTS = 64
MEASURED = 5000
WARM_UP = 3000  # caches keyed by tensor shapes (batch size × padded length) fill up during the warm-up
MIX = {"text": 0.82, "mask": 0.11, "image": 0.05, "flow": 0.02}
RSS_GROWTH = 0.07  # read once idle, it grew by 0-2.2% here (this mix; int8, bf16, compiled: -0.6-1.3%)
# Batched against alone, float32 rounding differs with the kernels a batch takes (oneDNN chunks,
# padding): up to 1.04e-4 relative on the sentiment model (8 cross-attention heads, widening 2),
# 3.4e-5 on the flow model's tiles (2 cross-attention heads), 1.01e-5 on the digits model, 1.02e-5
# on a fill-mask probability of 0.59 (the demo model, retrained to sharper answers).
TEXT_TOLERANCE, IMAGE_TOLERANCE, FLOW_TOLERANCE, MASK_TOLERANCE = 2 * FP32_PADDED, FP32_PADDED, FP32_PADDED, FP32_PADDED
RNG = np.random.default_rng(5000)
ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLM.,!?0123456789", np.uint8)


def random_text(length: int) -> str:
    return bytes(RNG.choice(ALPHABET, length)).decode()


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


async def post(session: aiohttp.ClientSession, path: str, *, body: dict | None = None,
               files: dict[str, bytes] | None = None, fields: dict[str, str] | None = None) -> Reply:
    """One POST of a JSON body or a multipart form (aiohttp: httpx's client costs ~20× more CPU per request)."""
    data = None
    if files is not None:
        data = aiohttp.FormData()
        for name, content in files.items():
            data.add_field(name, content, filename=f"{name}.png", content_type="image/png")
        for name, value in (fields or {}).items():
            data.add_field(name, value)
    async with session.post(path, json=body, data=data) as r:
        return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read())


@dataclasses.dataclass(frozen=True)
class Job:
    kind: str
    key: int  # index of the input in its kind's list

    def send(self, session: aiohttp.ClientSession, inputs: "Inputs") -> Awaitable[Reply]:
        if self.kind == "text":
            return post(session, "/classify/text", body={"text": inputs.texts[self.key], "return_logits": True})
        if self.kind == "mask":
            return post(session, "/fill-mask", body={"text": inputs.masks[self.key], "top_k": 5})
        if self.kind == "image":
            return post(session, "/classify/image", files={"image": inputs.images[self.key]},
                        fields={"return_logits": "true"})
        first, second = inputs.flows[self.key]
        return post(session, "/flow", files={"frame1": first, "frame2": second})


@dataclasses.dataclass
class Inputs:
    """Distinct inputs of each kind and their answers computed alone (texts grouped by equal length: no padding)."""

    texts: list[str]
    masks: list[str]
    images: list[bytes]
    flows: list[tuple[bytes, bytes]]
    text_logits: np.ndarray = None
    mask_probs: list[np.ndarray] = None
    image_logits: np.ndarray = None
    flow_fields: list[np.ndarray] = None


def same_length_batches(items: list[list[int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, ids in enumerate(items):
        groups.setdefault(len(ids), []).append(index)
    return groups


@pytest.fixture(scope="session")
def inputs(direct) -> Inputs:
    return make_inputs(direct)


def make_inputs(direct: Callable[[str], torch.nn.Module]) -> Inputs:
    texts = [random_text(length) for length in (12, 24, 40, 64, 100, 160, 250) for _ in range(120)]
    masks = [random_text(length) + "[MASK]" + random_text(6) for length in (10, 30, 70) for _ in range(100)]
    images = [png_bytes(RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(48)]
    flows = [(png_bytes(a), png_bytes(np.roll(a, 3, axis=1)))
             for a in (RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(16))]
    found = Inputs(texts, masks, images, flows)
    with torch.no_grad():
        model = direct("text-classification")
        tokenizer = ByteTokenizer(model.config.max_position_embeddings)
        ids = [tokenizer.encode(t) for t in texts]
        found.text_logits = np.zeros((len(texts), model.config.num_labels), np.float32)
        for indices in same_length_batches(ids).values():
            found.text_logits[indices] = model(torch.tensor([ids[i] for i in indices])).numpy()

        model = direct("fill-mask")
        width = context_bytes(reactive_models())
        ids, positions = [], []
        for text in masks:  # the 77-byte ones are answered from the bytes around the mask
            before, after = text.split("[MASK]")
            data, at = f"{before} {after}".encode(), len(before.encode())
            start, end = answering_window(len(data), at, at, width)
            positions.append(at - start + 1)  # +1: [CLS]
            ids.append(tokenizer.encode(data[start:end]))
            ids[-1][positions[-1]] = ByteTokenizer.MASK
        found.mask_probs = [None] * len(masks)
        for indices in same_length_batches(ids).values():
            probs = torch.softmax(model(torch.tensor([ids[i] for i in indices])).double(), -1).numpy()
            for i, p in zip(indices, probs):
                found.mask_probs[i] = p[positions[i]][ByteTokenizer.NUM_SPECIAL:]

        model = direct("image-classification")
        processor = ImageClassificationRunner(model, ImageOptions(**model_options("image-classification"))).processor
        pixels = torch.stack([processor(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        found.image_logits = model(pixels).numpy()

        model = direct("optical-flow")
        pairs = np.stack([[np.asarray(Image.open(io.BytesIO(f))) for f in pair] for pair in flows])
        found.flow_fields = list(model(flow_patches(torch.from_numpy(pairs))).numpy() * 20.0)
    return found


def checker(inputs: Inputs) -> Callable[[Job, Reply], None]:
    def check(job: Job, r: Reply) -> None:
        if job.kind == "text":
            (result,) = r.json()["results"]
            assert_close(result["logits"], inputs.text_logits[job.key], TEXT_TOLERANCE)
        elif job.kind == "mask":
            body, probs = r.json(), inputs.mask_probs[job.key]
            (masked,) = body["masked"]
            assert_top_k(masked["predictions"], probs, index_key="byte", k=5, tolerance=MASK_TOLERANCE)
            before, after = inputs.masks[job.key].split("[MASK]")
            best = masked["predictions"][0]["byte"]
            assert probs[best] >= probs.max() - 1e-6
            assert body["text"] == before + chr(best) + after if best < 128 else body["text"].startswith(before)
            assert masked["position"] == len(before.encode())
        elif job.kind == "image":
            (result,) = r.json()["results"]
            assert_close(result["logits"], inputs.image_logits[job.key], IMAGE_TOLERANCE)
        else:
            got = np.load(io.BytesIO(r.body), allow_pickle=False)
            assert_close(got, inputs.flow_fields[job.key], FLOW_TOLERANCE)
    return check


def plan(inputs: Inputs, count: int, seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    sizes = {"text": len(inputs.texts), "mask": len(inputs.masks), "image": len(inputs.images),
             "flow": len(inputs.flows)}
    kinds = rng.choice(list(MIX), count, p=list(MIX.values()))
    return [Job(kind, int(rng.integers(sizes[kind]))) for kind in kinds]


@dataclasses.dataclass
class Outcome:
    statuses: Counter
    wrong: list[str]
    lost: list[str]
    latencies: list[float]
    seconds: float

    @classmethod
    def joined(cls, parts: list[Outcome]) -> Outcome:
        return cls(sum((p.statuses for p in parts), Counter()), [w for p in parts for w in p.wrong],
                   [x for p in parts for x in p.lost], [t for p in parts for t in p.latencies],
                   sum(p.seconds for p in parts))


Send = Callable[[Job, aiohttp.ClientSession], Awaitable[Reply]]


async def run(url: str, jobs: list[Job], inputs: Inputs, send: Send | None = None,
              check: Callable[[Job, Reply], None] | None = None) -> Outcome:
    """``jobs`` sent by ``CLIENTS`` concurrent clients, each taking the next job when its answer is in."""
    check = check or checker(inputs)
    send = send or (lambda job, session: job.send(session, inputs))
    queue = list(reversed(jobs))
    outcome = Outcome(Counter(), [], [], [], 0.0)

    async def client_loop(session: aiohttp.ClientSession) -> None:
        while queue:
            job = queue.pop()
            started = time.perf_counter()
            try:
                r = await send(job, session)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                outcome.lost.append(f"{job}: {type(exc).__name__}: {exc}")
                continue
            outcome.latencies.append(time.perf_counter() - started)
            outcome.statuses[r.status] += 1
            if r.status == 429 and r.headers.get("retry-after", "").isdigit():
                continue
            if r.status != 200:
                outcome.lost.append(f"{job}: {r.status} {r.body[:200]!r}")
                continue
            try:
                check(job, r)
            except (AssertionError, ValueError, KeyError) as exc:
                outcome.wrong.append(f"{job}: {type(exc).__name__} {exc}")

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(session) for _ in range(CLIENTS)))
        outcome.seconds = time.perf_counter() - started
    return outcome


def idle_rss(pid: int) -> int:
    """The server's resident memory once its workers have fallen idle (``IDLE_AFTER_S``) and trimmed."""
    time.sleep(IDLE_AFTER_S + 0.5)
    return rss_bytes(pid)


def test_inputs_are_told_apart_by_their_answers(inputs):
    """Otherwise a misrouted answer could pass for the right one."""
    def apart(answers, tolerance: float = FP32) -> float:
        answers = np.stack(answers)
        return distinguishable(answers, tolerance * np.abs(answers).max())

    assert apart(inputs.text_logits, TEXT_TOLERANCE) >= 0.98  # a few random texts of 12 bytes may differ in one late byte only
    assert len(set(inputs.masks)) == len(inputs.masks)  # told apart by the filled text they come back with
    assert apart(inputs.mask_probs) >= 0.98
    assert apart(inputs.image_logits, IMAGE_TOLERANCE) == 1.0
    assert apart(inputs.flow_fields, FLOW_TOLERANCE) == 1.0


def test_mixed_load_every_answer_is_its_callers(server, inputs):
    warm = asyncio.run(run(server.url, plan(inputs, WARM_UP, seed=1), inputs))
    assert not warm.lost and not warm.wrong, (warm.lost[:5], warm.wrong[:5])
    # Every queue holds more than the 64 clients can have in flight: nothing may be refused.
    assert warm.statuses == {200: WARM_UP}, warm.statuses
    jobs = plan(inputs, MEASURED, seed=2)
    halves = jobs[:MEASURED // 2], jobs[MEASURED // 2:]
    rss = [idle_rss(server.process.pid)]
    outcomes = []
    for half in halves:
        outcomes.append(asyncio.run(run(server.url, half, inputs)))
        rss.append(idle_rss(server.process.pid))
    outcome = Outcome.joined(outcomes)
    p50, p95 = np.percentile(outcome.latencies, [50, 95]) * 1000
    print(f"\nload: {len(jobs)} requests {dict(Counter(j.kind for j in jobs))} by {CLIENTS} clients in "
          f"{outcome.seconds:.1f} s ({len(jobs) / outcome.seconds:.0f} req/s), p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
          f"statuses {dict(outcome.statuses)}, wrong {len(outcome.wrong)}, lost {len(outcome.lost)}; "
          f"server RSS {' -> '.join(f'{value / 2**20:.0f}' for value in rss)} MiB")
    assert not outcome.lost, outcome.lost[:10]
    assert not outcome.wrong, outcome.wrong[:10]
    assert outcome.statuses == {200: len(jobs)}, outcome.statuses
    # A leak grows memory with the traffic, in both halves; a one-off step (a heap or cache reaching a
    # new high: once in CI on an AVX2 EPYC, 466 -> 522 MiB, never in 5 rounds of 5,000 here) in one.
    growth = [after / before - 1 for before, after in zip(rss, rss[1:])]
    assert min(growth) <= RSS_GROWTH / 2, f"RSS grew in both halves: {[f'{g:.1%}' for g in growth]}"


def test_a_full_queue_refuses_with_429_and_retry_after(server, inputs):
    """A model with a queue of 4 under 64 clients: the overflow gets 429, every other answer is still right."""
    jobs = [Job("text", i) for i in range(640)]

    def to_small_queue(job: Job, session: aiohttp.ClientSession) -> Awaitable[Reply]:
        return post(session, "/classify/text", body={"text": inputs.texts[job.key], "return_logits": True,
                                                     "model": SMALL_QUEUE})

    outcome = asyncio.run(run(server.url, jobs, inputs, send=to_small_queue))
    print(f"\noverload: {len(jobs)} requests to a queue of 4: statuses {dict(outcome.statuses)}")
    assert not outcome.lost and not outcome.wrong, (outcome.lost[:5], outcome.wrong[:5])
    assert outcome.statuses[429] > 0 and outcome.statuses[200] > 0
    assert set(outcome.statuses) == {200, 429}
