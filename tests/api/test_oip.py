"""The Open Inference Protocol's HTTP side on the shared demo server: what tritonclient does not exercise."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from ..support import Peak
from .conftest import png_bytes

TEXT_MODEL = "text-sentiment"


def infer(client, model: str, body: dict, binary: bytes = b"", **headers):
    header = json.dumps(body).encode()
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(header))
    return client.post(f"/v2/models/{model}/infer", content=header + binary, headers=headers)


def test_server_metadata_and_health(client):
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "model_repository",
                                                 "model_configuration", "statistics"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{TEXT_MODEL}/ready").json() == {"name": TEXT_MODEL, "ready": True}
    assert client.get(f"/v2/models/{TEXT_MODEL}/versions/1/ready").status_code == 200


def test_model_metadata_carries_labels_and_the_video_note(client):
    meta = client.get(f"/v2/models/{TEXT_MODEL}").json()
    labels = meta["parameters"]["labels"]
    assert meta["outputs"][0] == {"name": "LOGITS", "datatype": "FP32", "shape": [-1, len(labels)]}
    assert labels == client.get(f"/models/{TEXT_MODEL}/labels").json()["labels"]
    video = client.get("/v2/models/video-autoencoder").json()
    assert video["inputs"] == [] and "ReconstructVideo" in video["parameters"]["note"]
    refused = infer(client, "video-autoencoder", {"inputs": []})
    assert refused.status_code == 400 and "ReconstructVideo" in refused.json()["error"]


def test_model_config_matches_the_metadata_and_the_batching(client):
    """Triton's model configuration extension: whole shapes (max_batch_size 0) equal to the metadata's,
    Triton's data type names, and the server's own batching, dtype and device from /models."""
    for model in (TEXT_MODEL, "language-mlm", "optical-flow"):
        meta, config = client.get(f"/v2/models/{model}").json(), client.get(f"/v2/models/{model}/config").json()
        assert config["name"] == model and config["max_batch_size"] == 0
        for kind, key in (("inputs", "input"), ("outputs", "output")):
            assert [(t["name"], t["dims"]) for t in config[key]] == [(t["name"], t["shape"]) for t in meta[kind]]
            assert [t["data_type"] for t in config[key]] == [
                "TYPE_STRING" if t["datatype"] == "BYTES" else "TYPE_" + t["datatype"] for t in meta[kind]]
        described = client.get(f"/models/{model}").json()
        parameters = {name: value["string_value"] for name, value in config["parameters"].items()}
        assert parameters["task"] == described["task"] and parameters["dtype"] == described["dtype"]
        assert parameters["max_batch_items"] == str(described["batching"]["max_batch_size"])
        assert parameters["device"] == described["device"]
        assert config["instance_group"] == [{"name": model, "kind": "KIND_CPU", "count": described["instances"]}]
    spans = client.get("/v2/models/language-mlm/versions/1/config").json()["input"][1]
    assert spans == {"name": "MASK_SPANS", "data_type": "TYPE_INT64", "dims": [-1, 2], "optional": True}
    video = client.get("/v2/models/video-autoencoder/config").json()
    assert video["input"] == [] and "ReconstructVideo" in video["parameters"]["note"]["string_value"]
    for path, code in (("/v2/models/no-such-model/config", 404), (f"/v2/models/{TEXT_MODEL}/versions/7/config", 404)):
        answer = client.get(path)
        assert answer.status_code == code and "error" in answer.json()


def test_model_statistics_count_the_items_answered(client):
    """The statistics extension: a request of five texts adds five items, over REST or v2 alike; every loaded
    model is listed by /v2/models/stats."""
    def stats(path: str) -> dict:
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()["model_stats"]

    before = stats(f"/v2/models/{TEXT_MODEL}/stats")[0]
    assert client.post("/classify/text", json={"texts": ["one", "two", "three"]}).status_code == 200
    texts = {"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": ["four", "five"]}
    assert infer(client, TEXT_MODEL, {"inputs": [texts]}).status_code == 200
    after = stats(f"/v2/models/{TEXT_MODEL}/versions/1/stats")[0]
    assert (after["name"], after["version"]) == (TEXT_MODEL, "1")
    assert after["inference_count"] - before["inference_count"] == 5
    assert 1 <= after["execution_count"] - before["execution_count"] <= 2
    for kind in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][kind]["count"] - before["inference_stats"][kind]["count"] == 5
        assert after["inference_stats"][kind]["ns"] > before["inference_stats"][kind]["ns"]
    assert after["last_inference"] >= before["last_inference"]
    listed = {(m["name"], m["version"]) for m in stats("/v2/models/stats")}
    assert {(m["name"], "1") for m in client.get("/models").json()["models"] if m["state"] == "ready"} <= listed
    for path in ("/v2/models/no-such-model/stats", f"/v2/models/{TEXT_MODEL}/versions/7/stats"):
        assert client.get(path).status_code == 404


def test_json_data_flat_or_nested_and_no_content_type(client):
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["fine", "awful"]}]}
    flat = infer(client, TEXT_MODEL, body)
    assert flat.status_code == 200 and "content-type" not in flat.request.headers
    nested = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1], "data": [["fine"], ["awful"]]}]}
    refused = infer(client, TEXT_MODEL, nested)  # the signature is [-1]: rank 2 is refused, clearly
    assert refused.status_code == 400 and "has shape [2, 1]" in refused.json()["error"]
    outputs = {o["name"]: o for o in flat.json()["outputs"]}
    assert outputs["LOGITS"]["shape"][0] == 2 and len(outputs["LABEL"]["data"]) == 2
    frame = np.arange(32 * 40 * 3, dtype=np.uint8).reshape(32, 40, 3)
    nested_frames = {"inputs": [{"name": n, "datatype": "UINT8", "shape": list(frame.shape), "data": frame.tolist()}
                                for n in ("FRAME1", "FRAME2")]}
    flow = infer(client, "optical-flow", nested_frames)
    assert flow.status_code == 200 and flow.json()["outputs"][0]["shape"] == [32, 40, 2]


def test_binary_inputs_and_outputs(client):
    image = png_bytes(np.zeros((40, 40, 3), np.uint8))
    data = struct.pack("<I", len(image)) + image
    body = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(data)}}],
            "outputs": [{"name": "LOGITS", "parameters": {"binary_data": True}}, {"name": "LABEL"}]}
    r = infer(client, "image-classifier", body, data)
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:length])
    logits_meta, label = header["outputs"]
    assert "data" not in logits_meta and label["data"]
    logits = np.frombuffer(r.content[length:], "<f4")
    assert logits.nbytes == logits_meta["parameters"]["binary_data_size"] and logits.size == logits_meta["shape"][1]


def test_errors_are_a_plain_error_string(client):
    for r in (client.get("/v2/models/nope"), client.get(f"/v2/models/{TEXT_MODEL}/versions/7"),
              infer(client, TEXT_MODEL, {"inputs": [{"name": "TEXT", "datatype": "FP32", "shape": [1], "data": [1]}]})):
        assert 400 <= r.status_code < 500 and isinstance(r.json()["error"], str), r.text


def test_v2_requests_count_as_protocol_oip(client):
    infer(client, TEXT_MODEL, {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x"]}]})
    metrics = client.get("/metrics").text
    assert 'endpoint="/v2/models/{model}/infer",model="text-sentiment",protocol="oip"' in metrics


TEXTS = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["fine", "awful"]}]}


def test_an_empty_outputs_list_asks_for_the_default_outputs(client):
    """``"outputs": []`` is no choice, as a gRPC request without outputs: the task's default outputs."""
    plain = infer(client, TEXT_MODEL, TEXTS).json()["outputs"]
    empty = infer(client, TEXT_MODEL, {**TEXTS, "outputs": []})
    assert empty.status_code == 200 and empty.json()["outputs"] == plain and {o["name"] for o in plain} == {"LOGITS", "LABEL"}


@pytest.mark.parametrize("where", ["input", "output"])
@pytest.mark.parametrize("parameter", ["classification", "shared_memory_region"])
def test_parameters_of_extensions_not_offered_are_refused(client, where, parameter):
    """A client asking for class strings or shared memory expects another answer than it would get."""
    body = json.loads(json.dumps(TEXTS))
    if where == "input":
        body["inputs"][0]["parameters"] = {parameter: 1}
    else:
        body["outputs"] = [{"name": "LOGITS", "parameters": {parameter: 1}}]
    refused = infer(client, TEXT_MODEL, body)
    assert refused.status_code == 422 and parameter in refused.json()["error"], refused.text


def test_validation_messages_name_the_tensors_and_parameters(client):
    none = infer(client, TEXT_MODEL, {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [0], "data": []}]})
    assert none.status_code in (400, 422) and none.json()["error"].startswith("TEXT:"), none.text
    bad_top = infer(client, TEXT_MODEL, {**TEXTS, "parameters": {"top_k": -3}})
    assert bad_top.status_code in (400, 422) and bad_top.json()["error"].startswith("parameters.top_k:"), bad_top.text
    header = json.dumps(TEXTS).encode()
    named = client.post(f"/v2/models/{TEXT_MODEL}/infer", content=header, headers={"Inference-Header-Content-Length": "ab"})
    assert named.status_code == 400 and "not a number" in named.json()["error"]


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_request_bodies_are_read(client, encoding, compress):
    """tritonclient's request_compression_algorithm: gzip and deflate bodies answer as plain ones, on v2
    (with binary tensors too) and on REST."""
    plain = infer(client, TEXT_MODEL, TEXTS).json()["outputs"]
    packed = client.post(f"/v2/models/{TEXT_MODEL}/infer", content=compress(json.dumps(TEXTS).encode()),
                         headers={"Content-Encoding": encoding})
    assert packed.status_code == 200 and packed.json()["outputs"] == plain, packed.text
    blob = b"".join(struct.pack("<I", len(t)) + t for t in (b"fine", b"awful"))
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}}]}
    header = json.dumps(body).encode()
    binary = client.post(f"/v2/models/{TEXT_MODEL}/infer", content=compress(header + blob),
                         headers={"Content-Encoding": encoding, "Inference-Header-Content-Length": str(len(header))})
    assert binary.status_code == 200 and binary.json()["outputs"] == plain, binary.text
    rest = client.post("/classify/text", content=compress(json.dumps({"texts": ["fine", "awful"]}).encode()),
                       headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
    assert rest.status_code == 200 and len(rest.json()["results"]) == 2, rest.text


def test_bad_compressed_bodies_are_refused_clearly(client):
    url = f"/v2/models/{TEXT_MODEL}/infer"
    body = gzip.compress(json.dumps(TEXTS).encode())
    truncated = client.post(url, content=body[:-12], headers={"Content-Encoding": "gzip"})
    assert truncated.status_code == 400 and "truncated" in truncated.json()["error"], truncated.text
    garbage = client.post(url, content=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert garbage.status_code == 400 and "not valid gzip" in garbage.json()["error"], garbage.text
    other = client.post(url, content=json.dumps(TEXTS).encode(), headers={"Content-Encoding": "br"})
    assert other.status_code == 415 and "'br' is not supported" in other.json()["error"], other.text
    rest = client.post("/classify/text", content=b"\x1f\x8b junk",
                       headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert rest.status_code == 400 and rest.json()["error"]["code"] == "bad_encoding", rest.text


def test_a_compression_bomb_stops_at_the_body_limit(client, server):
    """The limit counts decompressed bytes: 1 GiB of zeros in a 1 MiB gzip body is refused (413) after
    inflating at most the limit, and the server answers on."""
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    packed = b"".join(bomb.compress(zeros) for _ in range(1024)) + bomb.flush()
    assert len(packed) < 2 << 20
    with Peak(server.process.pid) as peak:
        refused = client.post(f"/v2/models/{TEXT_MODEL}/infer", content=packed, headers={"Content-Encoding": "gzip"})
    assert refused.status_code == 413 and "once decompressed" in refused.json()["error"], refused.text
    assert peak.growth < 256 << 20, peak.growth  # not the whole gigabyte, then refused
    assert infer(client, TEXT_MODEL, TEXTS).status_code == 200


def test_an_image_batch_error_names_the_image(client):
    good = png_bytes(np.zeros((40, 40, 3), np.uint8))
    images = [good, b"garbage", good]
    blob = b"".join(struct.pack("<I", len(i)) + i for i in images)
    body = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(blob)}}]}
    refused = infer(client, "image-classifier", body, blob)
    assert refused.status_code == 415 and refused.json()["error"].startswith("IMAGE[1]: "), refused.text


def test_rest_only_parameters_are_refused_over_v2(client):
    frame = np.zeros((32, 40, 3), np.uint8)
    body = {"inputs": [{"name": n, "datatype": "UINT8", "shape": list(frame.shape), "data": frame.ravel().tolist()}
                       for n in ("FRAME1", "FRAME2")], "parameters": {"format": "png"}}
    refused = infer(client, "optical-flow", body)
    assert refused.status_code == 422 and "'format'" in refused.json()["error"] and "FLOW" in refused.json()["error"]
