"""The Open Inference Protocol's HTTP side on the shared demo server: what tritonclient does not exercise."""

from __future__ import annotations

import json
import struct

import numpy as np

from .conftest import png_bytes

TEXT_MODEL = "text-sentiment"


def infer(client, model: str, body: dict, binary: bytes = b"", **headers):
    header = json.dumps(body).encode()
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(header))
    return client.post(f"/v2/models/{model}/infer", content=header + binary, headers=headers)


def test_server_metadata_and_health(client):
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
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
