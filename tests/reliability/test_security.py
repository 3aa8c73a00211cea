"""Security on one guarded `perceiver-serve` process: TLS on both ports (a certificate made here),
an API key, no docs, small limits, and a model whose checkpoint carries a pickle payload.
"""

from __future__ import annotations

import inspect
import pickle
import shutil
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from perceiver_serve.api import auth
from perceiver_serve.api.grpc import calls as grpc_front
from perceiver_serve.api import middleware
from perceiver_serve.api.grpc import SERVICE
from perceiver_serve.pb.inference import grpc_service_pb2 as ipb
from perceiver_serve.pb.inference import grpc_service_pb2_grpc
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..media.samples import png_with_header, solid
from ..support import DEMO_MODELS, ServerProcess
from .corpus import frames, noise, pcm, png, stream
from .repository import repository
from .tls import client_context, raw_request, self_signed

KEY = "correct-horse-battery-staple"
AUTH = {"authorization": f"Bearer {KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {KEY}"),)
EVIL = "evil-checkpoint"
MODEL_ROUTES = [("POST", "/classify/text"), ("POST", "/fill-mask"), ("POST", "/classify/image"), ("POST", "/flow"),
                ("GET", "/models"), ("GET", "/models/text-sentiment")]
OPEN = ["/health/live", "/health/ready", "/metrics"]


class Payload:
    """Unpickling this creates ``marker``: proof that the pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poisoned_model(root, marker) -> None:
    """A model folder whose checkpoint is a valid config and a pytorch_model.bin that runs code when unpickled."""
    folder = root / EVIL / "checkpoint"
    folder.mkdir(parents=True)
    (root / EVIL / "model.toml").write_text('task = "text-classification"\nsource = "checkpoint"\ndevice = "cpu"\n')
    shutil.copy(DEMO_MODELS / "text-sentiment" / "checkpoint" / "config.json", folder / "config.json")
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": Payload(str(marker))}, f)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guarded")
    root = repository(tmp / "repo", "text-sentiment", "image-classifier", "video-autoencoder")
    marker = tmp / "pickle-ran"
    poisoned_model(root, marker)
    cert, key = self_signed(tmp)
    proc = ServerProcess("--api-key", KEY, "--tls-cert", str(cert), "--tls-key", str(key), "--no-docs",
                         "--max-body-mb", "1", "--grpc-max-message-mb", "1", "--max-image-pixels", "1000000",
                         "--max-image-mb", "0.5", "--max-audio-seconds", "1", grpc=True, repository=root)
    context = client_context(cert)
    with proc:
        proc.wait("/health/live", verify=context)
        with httpx.Client(base_url=proc.url, verify=context, timeout=60) as client:
            deadline = time.monotonic() + 120
            while any(m["state"] == "loading" for m in client.get("/models", headers=AUTH).json()["models"]):
                assert time.monotonic() < deadline, proc.logs()
                time.sleep(0.2)
            proc.client, proc.context, proc.cert, proc.marker = client, context, cert, marker
            yield proc
        assert proc.stop() == 0, proc.logs()


@pytest.fixture(scope="module")
def secure_stub(guarded):
    credentials = grpc.ssl_channel_credentials(root_certificates=guarded.cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{guarded.grpc_port}", credentials) as channel:
        yield perceiver_pb2_grpc.PerceiverStub(channel), health_pb2_grpc.HealthStub(channel)


def status_of(guarded, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> int:
    head = f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    return raw_request(guarded.http_port, guarded.context, head.encode(), body)[0]


# -- API key -------------------------------------------------------------------------------------------------

def path_variants(path: str) -> list[str]:
    return [path, path.upper(), path.title(), path + "/", "/" + path, path.replace("/", "//"),
            path + "?api_key=" + KEY, path + "%00", path + ";x", path[:-1] + "%" + f"{ord(path[-1]):02x}",
            "/health/live/.." + path, "/health/live/%2e%2e" + path, "/metrics/../.." + path,
            "http://127.0.0.1" + path, path + "#/health/live"]


@pytest.mark.parametrize("method, path", MODEL_ROUTES, ids=[p for _, p in MODEL_ROUTES])
def test_every_model_route_needs_the_key_in_every_spelling_and_method(guarded, method, path):
    bad_keys = [{}, {"authorization": "Bearer wrong"}, {"authorization": f"bearer {KEY[:-1]}"},
                {"authorization": KEY}, {"x-api-key": KEY},
                {"authorization": f"Basic {KEY}"}, {"authorization": f"Bearer {KEY[:-1]}"}]
    tried = 0
    for target in path_variants(path):
        for verb in (method, "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            assert status_of(guarded, verb, target) == 401, (verb, target)
            tried += 1
    for headers in bad_keys:
        assert status_of(guarded, method, path, headers) == 401, headers
        tried += 1
    print(f"{path}: {tried} unauthenticated variants, all 401")
    assert status_of(guarded, method, path, AUTH) not in (401, 403)
    for scheme in ("bearer", "BEARER", "bEaReR"):  # RFC 9110 §11.1: the scheme is case-insensitive
        assert status_of(guarded, method, path, {"authorization": f"{scheme} {KEY}"}) not in (401, 403), scheme


@pytest.fixture(scope="module", params=["h11", "httptools"])
def parser_server(request, tmp_path_factory):
    """A plain-HTTP server with the key, running one named HTTP/1.1 implementation."""
    root = repository(tmp_path_factory.mktemp(request.param) / "repo", "text-sentiment")
    with ServerProcess("--api-key", KEY, "--http-parser", request.param, repository=root) as proc:
        proc.wait()
        proc.parser = request.param
        yield proc


def loaded_libraries(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_whitespace_around_the_key_is_not_part_of_it_with_either_http_parser(parser_server):
    """RFC 9110 §5.5: optional whitespace around a field value is not part of the value. The
    server decides that itself, so each parser gives the same answers (httptools 0.9 strips it
    before the app sees the header, h11 and older httptools releases do not all agree)."""
    # The server really runs the parser it was asked for (httptools is a compiled module).
    assert ("httptools" in loaded_libraries(parser_server.process.pid)) == (parser_server.parser == "httptools")

    def status(value: bytes) -> int:
        head = (b"POST /classify/text HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
                b"content-length: 2\r\nconnection: close\r\nauthorization:" + value + b"\r\n\r\n")
        return raw_request(parser_server.http_port, None, head, b"hi")[0]

    key = KEY.encode()
    for around in (b" Bearer " + key, b" Bearer " + key + b" ", b"Bearer " + key + b"\t", b"\t Bearer " + key + b"  ",
                   b" Bearer  " + key, b"bearer " + key):  # 1*SP after the scheme (RFC 9110 §11.4), any case
        assert status(around) == 200, around
    for wrong in (b" Bearer\t" + key, b" Bearer " + key + b" x", b" Bearer " + key + b"\x0b", b" Bearer" + key,
                  b" Bearer " + key[:-1], b" Bearer " + key + b"\xa0"):
        assert status(wrong) in (400, 401), wrong  # a parser may refuse a control byte outright


def test_the_credential_check_strips_only_optional_whitespace():
    expected = auth.bearer_credential(KEY)
    assert auth.offers_credential(b" \t" + expected + b"\t ", expected)
    assert not auth.offers_credential(expected + b"\r", expected)
    assert not auth.offers_credential(expected + b"\x00", expected)
    assert not auth.offers_credential(None, expected)
    assert not auth.offers_credential(b"", expected)
    assert auth.offers_credential(b"BEARER   " + KEY.encode(), expected)
    assert not auth.offers_credential(b"Basic " + KEY.encode(), expected)
    assert not auth.offers_credential(KEY.encode(), expected)


def test_open_paths_stay_open_and_nothing_else(guarded):
    for path in OPEN:
        assert status_of(guarded, "GET", path) != 401, path
    for path in ("/redoc/", "/docs/assets/other.js", "/nowhere", "/health", "/health/live/x", "/metrics/", "/Metrics"):
        assert status_of(guarded, "GET", path) == 401, path


def test_every_rpc_needs_the_key(secure_stub):
    stub, health = secure_stub
    for method in SERVICE.methods:
        call = getattr(stub, method.name)
        request = getattr(pb, method.input_type.name)()
        for metadata in ((), (("authorization", "Bearer nope"),), (("authorization", f"bearer {KEY[:-1]}"),),
                         (("authorization", KEY),), (("x-api-key", KEY),)):
            with pytest.raises(grpc.RpcError) as info:
                answer = call(iter([request]) if method.client_streaming else request, metadata=metadata, timeout=10)
                list(answer) if method.server_streaming else None
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method.name, metadata)
    assert stub.ClassifyText(pb.ClassifyTextRequest(texts=["ok"]), metadata=GRPC_AUTH).results
    assert stub.ClassifyText(pb.ClassifyTextRequest(texts=["ok"]), metadata=(("authorization", f"bearer {KEY}"),)).results
    assert health.Check(health_pb2.HealthCheckRequest(service="text-sentiment")).status == \
        health_pb2.HealthCheckResponse.SERVING  # health needs no key


def test_keys_are_compared_in_constant_time():
    assert "hmac.compare_digest(" in inspect.getsource(auth.offers_credential)
    for checker in (middleware.ApiKeyAuth.__call__, grpc_front._Rpc._authenticate):
        source = inspect.getsource(checker)
        assert "offers_credential(" in source, checker
        assert "==" not in source.replace("scope[\"type\"] == \"http\"", ""), checker


# -- model names stay inside the repository --------------------------------------------------------------------

TRAVERSALS = ["../../../../etc/passwd", "..", "../text-sentiment", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd",
              "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..\\..\\windows\\win.ini", "text-sentiment/../text-sentiment",
              "./text-sentiment", "text-sentiment\x00", "~root", "models/text-sentiment", "checkpoint",
              "text-sentiment/checkpoint/config.json"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_names_cannot_reach_outside_the_repository(guarded, secure_stub, name):
    client = guarded.client
    image = png(noise(16, 16))
    answers = [
        client.post("/classify/text", json={"text": "a", "model": name}, headers=AUTH),
        client.post("/classify/image", files={"image": ("a.png", image)}, data={"model": name}, headers=AUTH),
    ]
    if "\x00" not in name:  # no URL can carry a NUL
        answers += [client.post("/classify/image", params={"model": name}, content=image,
                                headers={**AUTH, "content-type": "image/png"}),
                    client.get("/models/" + name.replace("/", "%2F"), headers=AUTH)]
    for r in answers:
        assert r.status_code == 404, (r.request.url, r.text)
        assert "root:" not in r.text and "architectures" not in r.text
    stub, _ = secure_stub
    for call, request in ((stub.ClassifyText, pb.ClassifyTextRequest(texts=["a"], model=name)),
                          (stub.FillMask, pb.FillMaskRequest(text="a[MASK]", model=name))):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=GRPC_AUTH, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    config = stream(frames(4), config=pb.StreamConfig(model=name))()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ReconstructVideo(iter(config), metadata=GRPC_AUTH, timeout=10))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- pickle -----------------------------------------------------------------------------------------------------

def test_a_pickle_payload_in_a_checkpoint_is_refused_unrun_and_the_others_serve(guarded, secure_stub):
    client = guarded.client
    assert not guarded.marker.exists(), "unpickling the checkpoint ran its payload"
    evil = client.get(f"/models/{EVIL}", headers=AUTH).json()
    assert evil["state"] == "failed" and "pytorch_model.bin" in evil["reason"], evil
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["models"][EVIL]["reason"] == evil["reason"]
    assert ready.json()["models"]["text-sentiment"] == {"state": "ready"}
    refused = client.post("/classify/text", json={"text": "a", "model": EVIL}, headers=AUTH)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
    assert client.post("/classify/text", json={"text": "a"}, headers=AUTH).status_code == 200
    _, health = secure_stub
    status = {s: health.Check(health_pb2.HealthCheckRequest(service=s)).status for s in ("", EVIL, "text-sentiment")}
    assert status == {"": health_pb2.HealthCheckResponse.NOT_SERVING, EVIL: health_pb2.HealthCheckResponse.NOT_SERVING,
                      "text-sentiment": health_pb2.HealthCheckResponse.SERVING}


# -- limits, enforced before decoding -------------------------------------------------------------------------------

def test_a_declared_100_mb_body_is_refused_before_it_is_read(guarded):
    head = (f"POST /classify/text HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: {100 << 20}\r\n\r\n").encode()
    started = time.monotonic()
    status, reply = raw_request(guarded.http_port, guarded.context, head, b"a" * (64 << 10))
    assert status == 413 and b"too_large" in reply
    assert time.monotonic() - started < 5  # answered without waiting for the other 99.9 MB


def test_a_chunked_body_is_cut_at_the_limit(guarded):
    chunks = (b"%x\r\n" % (256 << 10) + b"a" * (256 << 10) + b"\r\n") * 5  # 1.25 MiB against 1 MiB
    head = (b"POST /classify/text HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
            b"authorization: Bearer " + KEY.encode() + b"\r\ntransfer-encoding: chunked\r\n\r\n")
    status, reply = raw_request(guarded.http_port, guarded.context, head, chunks + b"0\r\n\r\n")
    assert status == 413 and b"too_large" in reply


def test_image_limits_apply_from_the_header(guarded, secure_stub):
    client = guarded.client
    started = time.monotonic()
    bomb = client.post("/classify/image", files={"image": ("b.png", png_with_header(30_000, 30_000))}, headers=AUTH)
    assert bomb.status_code == 413 and "900000000" in bomb.json()["error"]["message"]
    assert time.monotonic() - started < 2
    over_pixels = png(solid((1, 2, 3), (1000, 1001)))  # a real picture just over --max-image-pixels 1000000
    r = client.post("/classify/image", files={"image": ("p.png", over_pixels)}, headers=AUTH)
    assert r.status_code == 413 and "1000000" in r.json()["error"]["message"]
    over_bytes = b"\x89PNG\r\n\x1a\n" + bytes(600 << 10)  # over --max-image-mb 0.5, under --max-body-mb 1
    r = client.post("/classify/image", content=over_bytes, headers={**AUTH, "content-type": "image/png"})
    assert r.status_code == 413 and str(512 << 10) in r.json()["error"]["message"]
    stub, _ = secure_stub
    with pytest.raises(grpc.RpcError) as info:
        stub.ClassifyImage(pb.ClassifyImageRequest(image=png_with_header(30_000, 30_000)), metadata=GRPC_AUTH)
    assert dict(info.value.trailing_metadata())["x-error-code"] == "too_large"


def test_grpc_message_and_audio_limits(secure_stub):
    stub, _ = secure_stub
    with pytest.raises(grpc.RpcError) as info:
        stub.ClassifyImage(pb.ClassifyImageRequest(image=bytes(1_500_000)), metadata=GRPC_AUTH, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # over --grpc-max-message-mb 1
    two_seconds = stream(pb.MediaPiece(frames=frames(4).frames, audio=pcm(np.zeros(3200, np.float32))))()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ReconstructVideo(iter(two_seconds), metadata=GRPC_AUTH, timeout=30))
    assert dict(info.value.trailing_metadata())["x-error-code"] == "too_large"  # over --max-audio-seconds 1
    assert "1 s" in info.value.details()


# -- docs and TLS --------------------------------------------------------------------------------------------------

def test_docs_are_off(guarded):
    for path in ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"):
        assert guarded.client.get(path, headers=AUTH).status_code == 404, path


def test_both_ports_serve_tls_only(guarded, secure_stub):
    r = guarded.client.post("/classify/text", json={"text": "over TLS"}, headers=AUTH)
    assert r.status_code == 200 and r.url.scheme == "https"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{guarded.http_port}/health/live", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{guarded.http_port}/health/live", timeout=5)  # not a trusted certificate
    stub, _ = secure_stub
    assert stub.ClassifyText(pb.ClassifyTextRequest(texts=["over TLS"]), metadata=GRPC_AUTH).results
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            perceiver_pb2_grpc.PerceiverStub(channel).ClassifyText(pb.ClassifyTextRequest(texts=["x"]),
                                                                  metadata=GRPC_AUTH, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with socket.create_connection(("127.0.0.1", guarded.http_port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert not sock.recv(1024).startswith(b"HTTP/1.1 200")


def test_the_v2_protocol_is_guarded_but_its_health_probes(guarded):
    """The Open Inference Protocol's routes and RPCs need the key like the others; its health probes do not."""
    assert status_of(guarded, "GET", "/v2/health/live") == 200
    assert status_of(guarded, "GET", "/v2/health/ready") == 503  # open; not ready: the pickled model failed
    for method, path in (("GET", "/v2"), ("GET", "/v2/models/text-sentiment"), ("GET", "/v2/models/text-sentiment/ready"),
                         ("POST", "/v2/models/text-sentiment/infer"), ("GET", "/v2/health/live/x"),
                         ("POST", "/v2/models/text-sentiment/versions/1/infer"),
                         ("GET", "/v2/models/text-sentiment/config")):
        assert status_of(guarded, method, path) == 401, path
    credentials = grpc.ssl_channel_credentials(root_certificates=guarded.cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{guarded.grpc_port}", credentials) as channel:
        _check_v2_rpcs(grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel))


def _check_v2_rpcs(inference) -> None:
    assert inference.ServerLive(ipb.ServerLiveRequest(), timeout=10).live
    assert not inference.ServerReady(ipb.ServerReadyRequest(), timeout=10).ready  # answered without the key
    for call, request in ((inference.ModelInfer, ipb.ModelInferRequest(model_name="text-sentiment")),
                          (inference.ModelMetadata, ipb.ModelMetadataRequest(name="text-sentiment")),
                          (inference.ModelConfig, ipb.ModelConfigRequest(name="text-sentiment")),
                          (inference.ModelReady, ipb.ModelReadyRequest(name="text-sentiment")),
                          (inference.ServerMetadata, ipb.ServerMetadataRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert inference.ModelReady(ipb.ModelReadyRequest(name="text-sentiment"), metadata=GRPC_AUTH, timeout=10).ready
