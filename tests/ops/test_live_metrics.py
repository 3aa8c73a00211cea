"""Scrape a running server after REST and gRPC traffic: every metric is there, and sensible."""

from __future__ import annotations

import asyncio
import re
import shutil

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc as pb_grpc

from ..support import DEMO_MODELS, ServerProcess
from .metric_contract import exported_metric_names, referenced_metric_names

REST_TEXTS, GRPC_TEXTS, BURST = 12, 7, 48


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def _value(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Traffic of known size over both protocols, then one scrape (and the server's own ready flag)."""
    repository = tmp_path_factory.mktemp("repo")
    for folder in DEMO_MODELS.iterdir():
        if (folder / "model.toml").exists():
            shutil.copytree(folder, repository / folder.name)
    toml = repository / "text-sentiment" / "model.toml"
    # A short queue, so a burst both batches and overflows (429 → rejected_requests_total).
    text = re.sub(r"max_queue = \d+", "max_queue = 8", toml.read_text())
    toml.write_text(re.sub(r"max_delay_ms = \d+", "max_delay_ms = 40", text))
    with ServerProcess(repository=repository, grpc=True) as proc:
        proc.wait()
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            for i in range(REST_TEXTS):
                assert c.post("/classify/text", json={"text": f"rest {i}"}).status_code == 200
            assert c.post("/fill-mask", json={"text": "a[MASK]c"}).status_code == 200
            assert c.post("/classify/text", json={"text": ""}).status_code == 400
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = pb_grpc.PerceiverStub(channel)
            for i in range(GRPC_TEXTS):
                stub.ClassifyText(pb.ClassifyTextRequest(texts=[f"grpc {i}"]))

        async def burst():
            async with httpx.AsyncClient(base_url=proc.url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/classify/text", json={"text": f"burst {i} " * 30})
                                              for i in range(BURST)))

        statuses = [r.status_code for r in asyncio.run(burst())]
        text = httpx.get(proc.url + "/metrics").text
    return _samples(text), text, statuses


def test_request_counts_equal_requests_sent(scraped):
    samples, _, statuses = scraped
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429} and ok > 0
    rest = _value(samples, "perceiver_requests_total", endpoint="/classify/text", protocol="rest")
    assert rest == REST_TEXTS + 1 + BURST
    assert _value(samples, "perceiver_requests_total", endpoint="/classify/text", status="200") == REST_TEXTS + ok
    assert _value(samples, "perceiver_requests_total", endpoint="/classify/text", status="429") == BURST - ok
    assert _value(samples, "perceiver_requests_total", endpoint="/classify/text", status="400") == 1
    assert _value(samples, "perceiver_requests_total", endpoint="ClassifyText", protocol="grpc",
                  status="OK") == GRPC_TEXTS
    assert _value(samples, "perceiver_requests_total", model="language-mlm", endpoint="/fill-mask") == 1
    assert _value(samples, "perceiver_rejected_requests_total", model="text-sentiment",
                  reason="queue_full") == BURST - ok


def test_batching_and_timing_histograms(scraped):
    samples, _, statuses = scraped
    items = _value(samples, "perceiver_batch_size_sum", model="text-sentiment")
    passes = _value(samples, "perceiver_batch_size_count", model="text-sentiment")
    assert items == REST_TEXTS + GRPC_TEXTS + statuses.count(200)
    assert passes < items  # the burst shared forward passes
    assert _value(samples, "perceiver_inference_duration_seconds_count", model="text-sentiment") == passes
    assert _value(samples, "perceiver_queue_duration_seconds_count", model="text-sentiment") == items
    durations = _value(samples, "perceiver_request_duration_seconds_count", endpoint="/classify/text")
    assert durations == REST_TEXTS + 1 + BURST
    assert _value(samples, "perceiver_request_duration_seconds_sum", endpoint="/classify/text") > 0


def test_model_state_gauges(scraped):
    samples, _, _ = scraped
    models = [f.name for f in DEMO_MODELS.iterdir() if (f / "model.toml").exists()]
    for model in models:
        assert _value(samples, "perceiver_model_ready", model=model) == 1
        assert _value(samples, "perceiver_model_load_seconds", model=model) > 0
    assert _value(samples, "perceiver_queue_depth", model="text-sentiment") == 0
    assert _value(samples, "perceiver_inflight_requests", protocol="grpc") == 0
    assert _value(samples, "perceiver_inflight_requests", protocol="rest") == 0  # the scrape does not count itself


def test_every_metric_the_dashboards_and_autoscaler_use_is_exported(scraped):
    _, text, _ = scraped
    exported = exported_metric_names(text)
    missing = {name: where for name, where in referenced_metric_names().items() if name not in exported}
    # Only CUDA machines export device memory; everything else must be in a CPU server's scrape.
    missing.pop("perceiver_device_memory_bytes", None)
    assert not missing, missing
