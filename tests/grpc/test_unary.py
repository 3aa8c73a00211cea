"""Unary RPCs on the real `perceiver-serve serve` process: each equals its REST twin's answer."""

from __future__ import annotations

import io
import re
from collections import Counter

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from PIL import Image

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb

from ..support import wait_for

RNG = np.random.default_rng(7)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def picture(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_predictions_equal(grpc_predictions, rest_predictions) -> None:
    assert [(p.label, p.index) for p in grpc_predictions] == [(p["label"], p["index"]) for p in rest_predictions]
    assert [p.score for p in grpc_predictions] == pytest.approx([p["score"] for p in rest_predictions], rel=1e-6)


def assert_classifications_equal(reply: pb.ClassificationResponse, body: dict) -> None:
    assert reply.model == body["model"]
    assert len(reply.results) == len(body["results"])
    for got, want in zip(reply.results, body["results"]):
        assert_predictions_equal(got.predictions, want["predictions"])
        assert list(got.logits) == pytest.approx(want.get("logits", []), rel=1e-6, abs=1e-7)


def test_classify_text_equals_rest(stub, rest):
    texts = ["I loved this film.", "ünïcödé ☃", "x"]
    reply = stub.ClassifyText(pb.ClassifyTextRequest(texts=texts, top_k=2, return_logits=True))
    r = rest.post("/classify/text", json={"texts": texts, "top_k": 2, "return_logits": True})
    assert r.status_code == 200, r.text
    assert_classifications_equal(reply, r.json())
    assert all(len(result.logits) == 2 for result in reply.results)


def test_classify_text_defaults_equal_rest(stub, rest):
    reply = stub.ClassifyText(pb.ClassifyTextRequest(texts=["plain"]))
    r = rest.post("/classify/text", content=b"plain", headers={"content-type": "text/plain"})
    assert_classifications_equal(reply, r.json())
    assert not reply.results[0].logits


@pytest.mark.parametrize("text, spans", [("The capital of France is P[MASK]ris.", []),
                                         ("héllo wörld", [(1, 3), (7, 8)])])
def test_fill_mask_equals_rest(stub, rest, text, spans):
    reply = stub.FillMask(pb.FillMaskRequest(text=text, top_k=3,
                                             mask_spans=[pb.ByteSpan(start=s, end=e) for s, e in spans]))
    body = {"text": text, "top_k": 3} | ({"mask_spans": spans} if spans else {})
    want = rest.post("/fill-mask", json=body).json()
    assert reply.model == want["model"] and reply.text == want["text"]
    assert [(m.position, m.original if m.HasField("original") else None) for m in reply.masked] == [
        (m["position"], m["original"]) for m in want["masked"]]
    assert all(m.HasField("original") for m in reply.masked) == bool(spans)
    for got, expected in zip(reply.masked, want["masked"]):
        assert [(p.byte, p.char if p.HasField("char") else None) for p in got.predictions] == [
            (p["byte"], p["char"]) for p in expected["predictions"]]
        assert [p.score for p in got.predictions] == pytest.approx([p["score"] for p in expected["predictions"]])


def test_classify_image_equals_rest(stub, rest):
    image = png(picture(90, 120))
    reply = stub.ClassifyImage(pb.ClassifyImageRequest(image=image, top_k=3, return_logits=True))
    r = rest.post("/classify/image", files={"image": ("a.png", image, "image/png")},
                  data={"top_k": "3", "return_logits": "true"})
    assert r.status_code == 200, r.text
    assert_classifications_equal(reply, r.json())


def test_estimate_flow_equals_rest(stub, rest):
    first, second = png(picture(60, 90)), png(picture(60, 90))
    reply = stub.EstimateFlow(pb.EstimateFlowRequest(frame1=first, frame2=second))
    r = rest.post("/flow", files={"frame1": ("1.png", first), "frame2": ("2.png", second)}, data={"format": "npy"})
    assert r.status_code == 200, r.text
    want = np.load(io.BytesIO(r.content))
    assert (reply.model, reply.height, reply.width) == (r.headers["x-model"], 60, 90)
    got = np.frombuffer(reply.flow, dtype="<f4").reshape(reply.height, reply.width, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_list_models_equals_rest(stub, rest):
    reply = json_format.MessageToDict(stub.ListModels(pb.ListModelsRequest()), preserving_proto_field_name=True)
    want = rest.get("/models").json()
    assert reply["defaults"] == want["defaults"]
    assert reply["models"] == want["models"]


# -- errors -------------------------------------------------------------------------------------------

def error_of(call, request) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    error = info.value
    assert error.details()
    return error.code(), error.details(), dict(error.trailing_metadata())


BAD_UNARY = [
    ("ClassifyText", pb.ClassifyTextRequest(texts=[""]), grpc.StatusCode.INVALID_ARGUMENT, "empty_text"),
    ("ClassifyText", pb.ClassifyTextRequest(), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    ("ClassifyText", pb.ClassifyTextRequest(texts=["x"], top_k=1001), grpc.StatusCode.INVALID_ARGUMENT,
     "invalid_request"),
    ("ClassifyText", pb.ClassifyTextRequest(texts=["x" * 3000]), grpc.StatusCode.INVALID_ARGUMENT, "text_too_long"),
    ("ClassifyText", pb.ClassifyTextRequest(texts=["x"], model="nope"), grpc.StatusCode.NOT_FOUND, "model_not_found"),
    ("ClassifyText", pb.ClassifyTextRequest(texts=["x"], model="language-mlm"), grpc.StatusCode.NOT_FOUND,
     "wrong_task"),
    ("FillMask", pb.FillMaskRequest(text="no marker"), grpc.StatusCode.INVALID_ARGUMENT, "no_mask"),
    ("FillMask", pb.FillMaskRequest(text="abc", mask_spans=[pb.ByteSpan(start=2, end=9)]),
     grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ("ClassifyImage", pb.ClassifyImageRequest(image=b"not an image"), grpc.StatusCode.INVALID_ARGUMENT,
     "unsupported_media_type"),
    ("ClassifyImage", pb.ClassifyImageRequest(image=png(picture(8, 8))[:40]), grpc.StatusCode.INVALID_ARGUMENT,
     "invalid_input"),
    ("ClassifyImage", pb.ClassifyImageRequest(), grpc.StatusCode.INVALID_ARGUMENT, "invalid_input"),
    ("ClassifyImage", pb.ClassifyImageRequest(image=png(picture(8, 8)), model="text-sentiment"),
     grpc.StatusCode.NOT_FOUND, "wrong_task"),
    ("EstimateFlow", pb.EstimateFlowRequest(frame1=png(picture(40, 50)), frame2=png(picture(40, 52))),
     grpc.StatusCode.INVALID_ARGUMENT, "frame_size_mismatch"),
    ("EstimateFlow", pb.EstimateFlowRequest(frame1=png(picture(40, 50)), frame2=png(picture(40, 50)), model="nope"),
     grpc.StatusCode.NOT_FOUND, "model_not_found"),
]


@pytest.mark.parametrize("rpc, request_, code, error_code", BAD_UNARY,
                         ids=[f"{rpc}-{error}" for rpc, _, _, error in BAD_UNARY])
def test_bad_unary_input(stub, rpc, request_, code, error_code):
    got_code, details, trailers = error_of(getattr(stub, rpc), request_)
    assert (got_code, trailers["x-error-code"]) == (code, error_code), details
    assert re.fullmatch(r"[0-9a-f]{32}", trailers["x-request-id"])


def test_bad_input_has_the_same_code_as_rest(stub, rest):
    _, details, trailers = error_of(stub.ClassifyText, pb.ClassifyTextRequest(texts=[""]))
    r = rest.post("/classify/text", json={"text": ""})
    assert (r.status_code, r.json()["error"]) == (400, {"code": trailers["x-error-code"], "message": details})


@pytest.mark.parametrize("payload, what", [(b"\x0a\x02\xff\xfe", "bad UTF-8"), (b"\x0a\x09ab", "truncated")])
def test_malformed_message_is_invalid_argument_not_unknown(channel, payload, what):
    raw = channel.unary_unary("/perceiver.v1.Perceiver/ClassifyText")
    with pytest.raises(grpc.RpcError) as info:
        raw(payload)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
    assert "ClassifyTextRequest" in info.value.details()


# -- request ids, logs, metrics -------------------------------------------------------------------------

def test_request_id_is_echoed_and_logged(stub, process, rest):
    reply, call = stub.ClassifyText.with_call(pb.ClassifyTextRequest(texts=["id"]),
                                              metadata=(("x-request-id", "grpc-test-id.42"),))
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-test-id.42"
    _, call = stub.ListModels.with_call(pb.ListModelsRequest(), metadata=(("x-request-id", "bad id!"),))
    assert re.fullmatch(r"[0-9a-f]{32}", dict(call.trailing_metadata())["x-request-id"])
    rest.get("/health/live")  # the log line is written before the reply; give the pipe a moment
    assert re.search(r"grpc ClassifyText OK .*\[request grpc-test-id\.42\]", process.logs())


def test_rpcs_are_counted_in_metrics(stub, rest, process):
    stub.ClassifyText(pb.ClassifyTextRequest(texts=["count me"]))
    stub.ListModels(pb.ListModelsRequest())
    error_of(stub.ClassifyText, pb.ClassifyTextRequest(texts=[""]))
    # An RPC leaves the in-flight gauge a moment after its reply is sent: read once it has.
    def settled() -> str | None:
        text = rest.get("/metrics").text
        return text if 'perceiver_inflight_requests{protocol="grpc"} 0.0' in text else None

    try:
        text = wait_for(settled, 10, "the gRPC in-flight gauge back at 0")
    except AssertionError as exc:  # say which RPCs this session's server has seen, for the one still counted
        gauge = re.findall(r'perceiver_inflight_requests\{protocol="grpc"\} \S+', rest.get("/metrics").text)
        seen = Counter(re.findall(r"access: grpc (\w+ \w+) ", process.logs()))
        raise AssertionError(f"{exc}: {gauge}; the gRPC calls this server has ended: {dict(seen)}") from None
    for status in ("OK", "INVALID_ARGUMENT"):
        assert re.search(r'perceiver_requests_total\{endpoint="ClassifyText",model="text-sentiment",'
                         rf'protocol="grpc",status="{status}"\}} [1-9]', text), status
    assert 'perceiver_request_duration_seconds_count{endpoint="ListModels",model="",protocol="grpc"}' in text
    assert 'perceiver_inflight_requests{protocol="grpc"} 0.0' in text


# -- the video stream through the real process -------------------------------------------------------------

def test_video_stream_through_the_real_process(stub):
    frames = [pb.Frame(encoded=png(picture(40, 48))) for _ in range(5)]
    audio = pb.Audio(raw=pb.RawAudio(pcm_f32le=np.zeros(5 * 64, "<f4").tobytes(), sample_rate=1600))
    requests = [pb.ReconstructVideoRequest(config=pb.StreamConfig(chunks_per_window=2)),
                pb.ReconstructVideoRequest(media=pb.MediaPiece(frames=frames, audio=audio))]
    kinds = [m.WhichOneof("kind") for m in stub.ReconstructVideo(iter(requests), timeout=60)]
    assert kinds == ["started", "chunk", "chunk", "labels", "chunk", "chunk", "labels"]


def test_a_long_name_in_a_request_is_quoted_cut_short_in_the_status(stub, channel):
    """Status details travel in a trailer, which gRPC caps at 16 KiB: a message quoting a 17,000-character
    model (or service) name is cut, so the client still gets NOT_FOUND and our trailers, not a transport error."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for call, request in ((stub.ClassifyText, pb.ClassifyTextRequest(texts=["a"], model="x" * 17_000)),
                          (stub.FillMask, pb.FillMaskRequest(text="a[MASK]", model="x" * 17_000))):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
        assert dict(info.value.trailing_metadata())["x-error-code"] == "model_not_found"
        assert info.value.details().endswith("characters cut)") and len(info.value.details()) < 2100
    with pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="y" * 20_000), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().endswith("characters cut)")
