"""Models, health, OpenAPI, routing errors, body limits and API keys on the real server."""

import asyncio
import json

import httpx
import numpy as np
import pytest

from ..support import ServerProcess, metric_value, wait_for
from .conftest import error_of, png_bytes

TASKS = {"text-classification", "fill-mask", "image-classification", "optical-flow", "video-autoencoding"}


def test_models_list_every_demo_model(client):
    body = client.get("/models").json()
    assert {m["task"] for m in body["models"]} == TASKS
    for m in body["models"]:
        assert m["state"] == "ready" and m["device"] == "cpu" and m["dtype"] == "float32"
        assert m["batching"]["max_batch_size"] >= 1
    assert set(body["defaults"]) == TASKS


LABELLED = {"text-classification", "image-classification", "video-autoencoding"}
GEOMETRY = {"text-classification": {"max_text_bytes"}, "fill-mask": {"max_text_bytes"},
            "image-classification": {"image_size", "crop_size"},
            "optical-flow": {"tile_size", "tile_overlap", "min_frame_side", "max_tiles"},
            "video-autoencoding": {"frame_size", "frames_per_window", "sample_rate", "audio_samples_per_frame", "fps",
                                   "max_frames_per_stream"}}


def test_models_show_labels_only_for_classifiers_and_each_tasks_geometry(client):
    for m in client.get("/models").json()["models"]:
        assert set(m["geometry"]) == GEOMETRY[m["task"]], m
        if m["task"] in LABELLED:
            names = client.get(m["labels_url"]).json()
            assert names["model"] == m["name"] and len(names["labels"]) == m["labels"] >= 2
            assert all(isinstance(n, str) and n for n in names["labels"])
        else:
            assert "labels" not in m and "labels_url" not in m, m
            assert error_of(client.get(f"/models/{m['name']}/labels")) == (404, "no_labels")
    video = client.get("/models/video-autoencoder").json()["geometry"]
    assert video == {"frame_size": [32, 32], "frames_per_window": 4, "sample_rate": 1600,
                     "audio_samples_per_frame": 64, "fps": 25, "max_frames_per_stream": 1024}
    assert client.get("/models/optical-flow").json()["geometry"]["tile_size"] == [48, 64]


def test_one_model_and_unknown_model(client):
    assert client.get("/models/text-sentiment").json()["architecture"] == "PerceiverForSequenceClassification"
    assert error_of(client.get("/models/nope")) == (404, "model_not_found")
    assert error_of(client.get("/models/..%2F..%2Fetc%2Fpasswd"))[0] == 404
    assert error_of(client.get("/models/.hidden")) == (404, "model_not_found")


def test_an_idle_keep_alive_connection_outlives_the_clients_own_expiry(server):
    """httpx drops an idle pooled connection after 5 s; the server must keep it longer, or a request sent
    as the server closes it fails with "connection reset by peer" (uvicorn's default was also 5 s)."""
    import http.client
    import time
    from urllib.parse import urlsplit

    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        sockets = []
        for wait in (6.0, 0.0):  # 6 s: past httpx's 5 s keep-alive expiry
            conn.request("GET", "/health/live")
            response = conn.getresponse()  # a closed connection raises RemoteDisconnected here
            assert response.status == 200 and response.read() == b'{"status":"alive"}'
            sockets.append(conn.sock)
            time.sleep(wait)
        assert sockets[0] is sockets[1]  # one connection, kept open
    finally:
        conn.close()


def test_health(client):
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):  # probes that send HEAD
        head = client.head(path)
        assert (head.status_code, head.content) == (200, b""), path


def test_openapi_has_schemas_for_every_body(client):
    spec = client.get("/openapi.json").json()
    for path in ("/classify/text", "/fill-mask", "/classify/image", "/flow"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert content, path
    schemas = spec["components"]["schemas"]
    assert {"ClassifyTextRequest", "FillMaskRequest", "ClassificationResponse", "FillMaskResponse",
            "ErrorResponse"} <= set(schemas)
    assert client.get("/docs").status_code == 200


def test_routing_errors_use_the_error_shape(client):
    assert error_of(client.get("/no/such/route")) == (404, "not_found")
    assert error_of(client.get("/classify/text")) == (405, "method_not_allowed")
    assert error_of(client.post("/classify/text/", json={"text": "a"})) == (404, "not_found")


def test_metrics_exposition(client):
    client.post("/classify/text", json={"text": "count me"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'perceiver_requests_total{endpoint="/classify/text",model="text-sentiment",protocol="rest",status="200"}' \
        in r.text


@pytest.fixture(scope="module")
def guarded():
    """A server with an API key and a small body limit."""
    with ServerProcess("--api-key", "s3cret-key", "--max-body-mb", "0.05", "--no-docs") as proc:
        proc.wait()
        yield proc


AUTH = {"authorization": "Bearer s3cret-key"}


def test_api_key_is_required_on_model_routes(guarded):
    with httpx.Client(base_url=guarded.url) as c:
        assert c.post("/classify/text", json={"text": "a"}, headers=AUTH).status_code == 200
        assert c.post("/classify/text", json={"text": "a"}, headers={"authorization": "bearer s3cret-key"}).status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-key"},
                        {"authorization": "Bearer s3cret-key2"}, {"authorization": "Bearer s3cret"}):
            r = c.post("/classify/text", json={"text": "a"}, headers=headers)
            assert error_of(r) == (401, "unauthenticated") and r.headers["www-authenticate"] == "Bearer"
        for method, path in (("GET", "/models"), ("GET", "/models/text-sentiment"), ("POST", "/flow"),
                             ("POST", "/fill-mask"), ("POST", "/classify/image"), ("PUT", "/classify/text"),
                             ("POST", "/Classify/Text"), ("POST", "/classify//text"), ("GET", "/nowhere"),
                             ("OPTIONS", "/classify/text"), ("GET", "/health/live/"), ("GET", "/HEALTH/ready")):
            assert c.request(method, path).status_code == 401, (method, path)
        for path in ("/health/live", "/health/ready", "/metrics"):
            assert c.get(path).status_code == 200, path


def test_docs_can_be_turned_off(guarded):
    with httpx.Client(base_url=guarded.url, headers=AUTH) as c:
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404


def test_body_limit_by_content_length_and_by_stream(guarded):
    big = b"x" * 60_000
    with httpx.Client(base_url=guarded.url, headers=AUTH) as c:
        r = c.post("/classify/text", content=big, headers={"content-type": "text/plain"})
        assert error_of(r) == (413, "too_large")
        # Written by the middleware, formatted as a route's error is (compact JSON).
        assert r.content == json.dumps(r.json(), ensure_ascii=False, separators=(",", ":")).encode()

        def chunks():
            for _ in range(10):
                yield b"y" * 10_000

        r = c.post("/classify/text", content=chunks(), headers={"content-type": "text/plain"})
        assert error_of(r) == (413, "too_large")
        image = png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
        assert error_of(c.post("/classify/image", files={"image": ("a.png", image)})) == (413, "too_large")
        assert c.post("/classify/text", json={"text": "still serving"}).status_code == 200
        assert httpx.post(guarded.url + "/flow", content=big).status_code == 401  # no key: refused before routing
        # Each refusal is counted under its route, whether the route or a middleware answered it.
        wait_for(lambda: metric_value(c.get("/metrics").text, "perceiver_requests_total", model="",
                                      endpoint="/flow", protocol="rest", status="401") >= 1, 10, "the 401's count")
        metrics = c.get("/metrics").text
        assert metric_value(metrics, "perceiver_requests_total", model="", endpoint="/classify/text",
                            protocol="rest", status="413") >= 2  # the server is shared: others may add
        assert metric_value(metrics, "perceiver_requests_total", model="", endpoint="/classify/image",
                            protocol="rest", status="413") >= 1


async def test_concurrent_requests_share_forward_passes(server):
    """Visible through the engine: the batch-size histogram counts fewer passes than requests."""
    def passes() -> tuple[float, float]:
        text = httpx.get(server.url + "/metrics").text
        count = total = 0.0
        for line in text.splitlines():
            if line.startswith('perceiver_batch_size_count{model="text-sentiment"}'):
                count = float(line.split()[-1])
            if line.startswith('perceiver_batch_size_sum{model="text-sentiment"}'):
                total = float(line.split()[-1])
        return count, total

    before = passes()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        responses = await asyncio.gather(*(c.post("/classify/text", json={"text": f"text {i} " * 20})
                                           for i in range(32)))
    assert all(r.status_code == 200 for r in responses)
    after = passes()
    forward_passes, items = after[0] - before[0], after[1] - before[1]
    assert items == 32 and forward_passes < 32


def test_an_idle_server_has_nothing_in_flight(client):
    """The scrape that reads the gauge is not in flight by its own count; probes neither."""
    client.get("/health/ready")
    wait_for(lambda: metric_value(client.get("/metrics").text, "perceiver_inflight_requests", protocol="rest") == 0,
             30, "the in-flight gauge at 0")  # requests of earlier tests, if any, finish first
    metrics = client.get("/metrics").text
    assert 'endpoint="/metrics"' not in metrics and 'endpoint="/health/ready"' not in metrics
