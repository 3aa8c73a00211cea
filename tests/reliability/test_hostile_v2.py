"""The hostile corpus, v2 section: the Open Inference Protocol's inputs as strangers send them.

Same guarantee as the rest of the corpus, on the same shared server: every case gets a 4xx
(over gRPC the matching status) with a clear message naming what is wrong, never a 5xx, and
the server still serves afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import struct

import grpc
import numpy as np
import pytest

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from perceiver_serve.pb.inference import grpc_service_pb2 as pb
from perceiver_serve.pb.inference import grpc_service_pb2_grpc

from .test_hostile_inputs import assert_clear

pytestmark = pytest.mark.filterwarnings("ignore")
TEXT = "text-sentiment"


def text_input(data, shape=None, datatype="BYTES") -> dict:
    return {"name": "TEXT", "datatype": datatype, "shape": shape or [len(data)], "data": data}


def prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


@dataclasses.dataclass(frozen=True)
class V2Case:
    name: str
    status: int
    says: str  # a phrase the message must contain
    body: bytes
    model: str = TEXT
    headers: dict | None = None
    path: str | None = None

    @classmethod
    def of(cls, name: str, status: int, says: str, document: dict, binary: bytes = b"", *, model: str = TEXT,
           header_length: int | None = None) -> "V2Case":
        header = json.dumps(document).encode()
        length = len(header) if binary or header_length is not None else None
        headers = {"Inference-Header-Content-Length": str(header_length if header_length is not None else length)} \
            if length is not None else None
        return cls(name, status, says, header + binary, model, headers)


FRAME = np.zeros((40, 40, 3), np.uint8)
REST_CASES = [
    V2Case.of("wrong datatype", 400, "must be BYTES", {"inputs": [text_input([1.5], datatype="FP32")]}),
    V2Case.of("shape larger than its data", 400, "holds 3", {"inputs": [text_input(["a", "b"], shape=[3])]}),
    V2Case.of("shape smaller than its data", 400, "more elements than its shape",
              {"inputs": [text_input(["a", "b", "c"], shape=[1])]}),
    V2Case.of("negative dimension", 400, "non-negative", {"inputs": [text_input(["a"], shape=[-1])]}),
    V2Case.of("overflowing shape", 413, "elements per tensor", {"inputs": [text_input(["a"], shape=[2**62, 2**62])]}),
    V2Case.of("enormous shape", 413, "elements per tensor", {"inputs": [text_input(["a"], shape=[1 << 40])]}),
    V2Case.of("dimension not an integer", 422, "shape", {"inputs": [text_input(["a"], shape=["1"])]}),
    V2Case.of("BYTES length past the buffer", 400, "claims 1000 bytes",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}]},
              struct.pack("<I", 1000) + b"abc"),
    V2Case.of("BYTES length prefix cut", 400, "truncated length prefix",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 7}}]},
              prefixed(b"a") + b"\x01\x00"),
    V2Case.of("binary_data_size past the body", 400, "runs past",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 99}}]},
              prefixed(b"abc")),
    V2Case.of("binary data nobody claims", 400, "after the inputs",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}]},
              prefixed(b"abc") + b"extra"),
    V2Case.of("negative binary_data_size", 400, "non-negative integer",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": -4}}]},
              prefixed(b"abc")),
    V2Case.of("raw frame shorter than its shape", 400, "needs 30000", model="optical-flow", document={"inputs": [
        {"name": n, "datatype": "UINT8", "shape": [100, 100, 3], "parameters": {"binary_data_size": 10}}
        for n in ("FRAME1", "FRAME2")]}, binary=bytes(20)),
    V2Case.of("unknown input name", 400, "has no input 'TEXTS'",
              {"inputs": [{**text_input(["a"]), "name": "TEXTS"}]}),
    V2Case.of("missing input", 400, "needs input FRAME2", model="optical-flow", document={"inputs": [
        {"name": "FRAME1", "datatype": "UINT8", "shape": list(FRAME.shape), "data": FRAME.ravel().tolist()}]}),
    V2Case.of("input given twice", 400, "given twice", {"inputs": [text_input(["a"]), text_input(["b"])]}),
    V2Case.of("unknown output", 400, "has no output 'PROBS'", {"inputs": [text_input(["a"])],
                                                            "outputs": [{"name": "PROBS"}]}),
    V2Case.of("non-UTF-8 text", 400, "not valid UTF-8",
              {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
              prefixed(b"\xff\xfe")),
    V2Case.of("text too long", 413, "UTF-8 bytes", {"inputs": [text_input(["x" * 5000])]}),
    V2Case.of("BYTES given as numbers", 400, "must be strings", {"inputs": [text_input([1, 2])]}),
    V2Case.of("UINT8 value out of range", 400, "outside the range", model="optical-flow", document={"inputs": [
        {"name": n, "datatype": "UINT8", "shape": [1, 1, 3], "data": [0, 256, 0]} for n in ("FRAME1", "FRAME2")]}),
    V2Case.of("data nested too deep", 400, "deeper than 16",
              {"inputs": [text_input(json.loads("[" * 40 + '"a"' + "]" * 40), shape=[1])]}),
    V2Case.of("mask span past the text", 400, "not a non-empty byte range", model="language-mlm", document={"inputs": [
        text_input(["short"], shape=[1]), {"name": "MASK_SPANS", "datatype": "INT64", "shape": [1, 2],
                                          "data": [3, 99]}]}),
    V2Case.of("top_k out of range", 422, "top_k", {"inputs": [text_input(["a"])], "parameters": {"top_k": 0}}),
    V2Case.of("video has no v2 inference", 400, "ReconstructVideo", {"inputs": []}, model="video-autoencoder"),
    V2Case.of("header length larger than the body", 400, "Inference-Header-Content-Length",
              {"inputs": [text_input(["a"])]}, header_length=10_000),
    V2Case.of("header length not a number", 400, "Inference-Header-Content-Length", {"inputs": [text_input(["a"])]},
              header_length=-5),
    V2Case("not JSON", 400, "not valid JSON", b"{inputs: [}"),
    V2Case("inputs missing", 422, "inputs", b"{}"),
    V2Case("unknown model", 404, "no model named", b'{"inputs": []}', model="nope"),
    V2Case("unknown version", 404, "has no version", b'{"inputs": []}', path=f"/v2/models/{TEXT}/versions/9/infer"),
    V2Case("model name climbing out", 404, "", b'{"inputs": []}', path="/v2/models/..%2F..%2Fmodels/infer"),
    V2Case("model name with a dot-dot", 404, "", b'{"inputs": []}', path="/v2/models/%2e%2e/infer"),
    V2Case("model name with a NUL", 404, "no model named", b'{"inputs": []}', path="/v2/models/text%00sentiment/infer"),
    V2Case("model name with a slash", 404, "", b'{"inputs": []}', path=f"/v2/models/{TEXT}%2F..%2F{TEXT}/infer"),
]


@pytest.mark.parametrize("case", REST_CASES, ids=lambda c: c.name)
def test_rest_v2(rest, case: V2Case):
    path = case.path or f"/v2/models/{case.model}/infer"
    r = rest.post(path, content=case.body, headers=case.headers or {})
    assert r.status_code < 500, r.text
    assert r.status_code == case.status, r.text
    message = r.json()["error"]
    assert isinstance(message, str), r.text
    assert_clear(message)
    assert case.says in message, message


def raw_request(*inputs: tuple[str, str, list[int]], raw: list[bytes], model: str = TEXT) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name=model, raw_input_contents=raw, inputs=[
        pb.ModelInferRequest.InferInputTensor(name=n, datatype=d, shape=s) for n, d, s in inputs])


def typed_request(name: str, datatype: str, shape: list[int], model: str = TEXT, **contents) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape,
                                                   contents=pb.InferTensorContents(**contents))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


GRPC_CASES = [
    ("raw contents for fewer inputs", raw_request(("TEXT", "BYTES", [1]), ("X", "BYTES", [1]), raw=[prefixed(b"a")]),
     "INVALID_ARGUMENT", "raw_input_contents"),
    ("BYTES length past the buffer", raw_request(("TEXT", "BYTES", [1]), raw=[struct.pack("<I", 50) + b"ab"]),
     "INVALID_ARGUMENT", "claims 50 bytes"),
    ("typed contents disagree with shape", typed_request("TEXT", "BYTES", [3], bytes_contents=[b"a"]),
     "INVALID_ARGUMENT", "holds 3"),
    ("wrong datatype", raw_request(("TEXT", "FP32", [1]), raw=[b"\x00" * 4]), "INVALID_ARGUMENT", "must be BYTES"),
    ("enormous shape", raw_request(("TEXT", "BYTES", [1 << 40]), raw=[b""]), "INVALID_ARGUMENT", "elements"),
    ("negative shape", raw_request(("TEXT", "BYTES", [-3]), raw=[b""]), "INVALID_ARGUMENT", "non-negative"),
    ("non-UTF-8 text", raw_request(("TEXT", "BYTES", [1]), raw=[prefixed(b"\xc3")]), "INVALID_ARGUMENT", "UTF-8"),
    ("unknown datatype", raw_request(("TEXT", "STRING", [1]), raw=[prefixed(b"a")]), "INVALID_ARGUMENT",
     "unknown datatype"),
    ("typed UINT8 out of range", typed_request("FRAME1", "UINT8", [1, 1, 3], model="optical-flow",
                                               uint_contents=[1, 999, 3]), "INVALID_ARGUMENT", "outside the range"),
    ("unknown model", raw_request(("TEXT", "BYTES", [1]), raw=[prefixed(b"a")], model="../etc"), "NOT_FOUND",
     "no model named"),
    ("missing input", pb.ModelInferRequest(model_name=TEXT), "INVALID_ARGUMENT", "needs input TEXT"),
]


@pytest.fixture(scope="module")
def inference(channel):
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda c: c[0])
def test_grpc_v2(inference, case):
    _, request, status, says = case
    with pytest.raises(grpc.RpcError) as caught:
        inference.ModelInfer(request, timeout=60)
    error = caught.value
    assert error.code().name == status, error.details()
    assert_clear(error.details())
    assert says in error.details(), error.details()


def test_after_the_v2_corpus_the_server_still_serves(rest, inference):
    good = {"inputs": [text_input(["still here"])]}
    assert rest.post(f"/v2/models/{TEXT}/infer", json=good).status_code == 200
    answer = inference.ModelInfer(raw_request(("TEXT", "BYTES", [1]), raw=[prefixed(b"still here")]), timeout=60)
    assert [o.name for o in answer.outputs] == ["LOGITS", "LABEL"]
    assert inference.ServerReady(pb.ServerReadyRequest()).ready


def test_health_reflection_and_metrics_know_the_v2_service(rest, channel, inference):
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
    assert health.Check(check, timeout=30).status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "perceiver.v1.Perceiver"} <= names
    inference.ModelInfer(raw_request(("TEXT", "BYTES", [1]), raw=[prefixed(b"counted")]), timeout=60)
    metrics = rest.get("/metrics").text
    assert 'endpoint="ModelInfer",model="text-sentiment",protocol="oip",status="OK"' in metrics
