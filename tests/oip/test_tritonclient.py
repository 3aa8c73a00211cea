"""tritonclient 2.73.0, over HTTP and gRPC, against a real server: the v2 protocol as Triton's users call it.

Every answer is compared with the same request's REST answer on the same server. The client
calls run in a child process (:mod:`.triton_calls` says why). tritonclient is installed from
the lock with its ``http`` extra only; its ``grpc`` module runs on our grpcio and protobuf 7
(the ``grpc`` extra would pin protobuf below 7, which clashes with ours).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from ..api.conftest import png_bytes
from ..reliability.repository import repository
from ..support import REPO, running

MODELS = ("text-sentiment", "image-classifier", "language-mlm", "optical-flow")
TEXTS = ["a wonderful, moving film", "dull and far too long"]
MLM_TEXT = "The quick brown fox jumps over the lazy dog."
FRAME1 = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
FRAME2 = np.roll(FRAME1, 3, axis=1)
IMAGE = png_bytes(FRAME1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(grpc=True, repository=repository(tmp_path_factory.mktemp("v2"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def rest(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, server, tmp_path_factory):
    """What tritonclient got for every check, over one protocol."""
    inputs = tmp_path_factory.mktemp("triton") / "inputs.npz"
    np.savez(inputs, models=np.array(MODELS), texts=np.array([t.encode() for t in TEXTS], dtype=object),
             image=np.array([IMAGE], dtype=object), mlm_text=np.array([MLM_TEXT.encode()], dtype=object),
             spans=np.array([[4, 9]], dtype=np.int64), frame1=FRAME1, frame2=FRAME2)
    port = server.http_port if request.param == "http" else server.grpc_port
    done = subprocess.run([sys.executable, "-m", "tests.oip.triton_calls", request.param, f"127.0.0.1:{port}",
                           str(inputs)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_live_ready_and_metadata(triton):
    assert triton["live"] and triton["ready"] and all(triton["models_ready"].values())
    assert {"binary_tensor_data", "model_configuration"} <= set(triton["extensions"])
    meta = triton["metadata"]
    assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert [(t["name"], t["datatype"], t["shape"][0]) for t in meta["outputs"]] == [("LOGITS", "FP32", -1),
                                                                                      ("LABEL", "BYTES", -1)]


def test_model_config_reads_as_triton_s(triton, rest):
    """get_model_config: Triton's data type and instance kind names, whole shapes (max_batch_size 0), and
    the server's batching in its parameters."""
    config = triton["config"]
    assert config["max_batch_size"] == 0 and config["kind"] == "KIND_CPU"
    assert config["input"] == [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1], "optional": False},
                               {"name": "MASK_SPANS", "data_type": "TYPE_INT64", "dims": [-1, 2], "optional": True}]
    assert config["output"] == [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]},
                                {"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [-1, 262]}]
    described = rest.get("/models/language-mlm").json()
    assert config["parameters"]["task"] == "fill-mask"
    assert config["parameters"]["max_batch_items"] == str(described["batching"]["max_batch_size"])


def test_inference_statistics_count_what_the_client_sent(triton, rest):
    """get_inference_statistics after the client's own two requests of two texts each (and whatever the tests
    before it sent the shared server): every item answered, in passes of one or more, every model listed."""
    stats = triton["stats"]
    assert stats["inference_count"] >= 4 and stats["success"] == stats["inference_count"]
    assert 2 <= stats["execution_count"] <= stats["inference_count"]
    assert triton["all_stats"] == sorted(m["name"] for m in rest.get("/models").json()["models"])


@pytest.mark.parametrize("tensors", ["binary", "json"])
def test_text_classification_equals_rest(triton, rest, tensors):
    got = triton[f"text_{tensors}"]
    answer = rest.post("/classify/text", json={"texts": TEXTS, "return_logits": True}).json()["results"]
    np.testing.assert_allclose(got["logits"], [r["logits"] for r in answer], atol=1e-4)
    assert got["labels"] == [r["predictions"][0]["label"] for r in answer]


def test_image_classification_equals_rest(triton, rest):
    answer = rest.post("/classify/image", files={"image": ("i.png", IMAGE)},
                       params={"return_logits": "true"}).json()["results"][0]
    np.testing.assert_allclose(triton["image"]["logits"][0], answer["logits"], atol=1e-4)
    assert triton["image"]["labels"] == [answer["predictions"][0]["label"]]


def test_fill_mask_equals_rest(triton, rest):
    answer = rest.post("/fill-mask", json={"text": MLM_TEXT, "mask_spans": [[4, 9]]}).json()
    assert triton["fill_mask"]["text"] == [answer["text"]]
    logits = np.array(triton["fill_mask"]["logits"])
    assert logits.shape == (5, 262)
    best = [m["predictions"][0]["byte"] for m in answer["masked"]]
    assert (logits[:, 6:].argmax(axis=1) == best).all()  # 6 special ids come before the 256 bytes


def test_flow_equals_rest_npy(triton, rest):
    answer = rest.post("/flow", files={"frame1": ("1.png", png_bytes(FRAME1)), "frame2": ("2.png", png_bytes(FRAME2))})
    expected = np.load(io.BytesIO(answer.content))
    assert expected.shape == (48, 64, 2)
    np.testing.assert_allclose(triton["flow"], expected, atol=1e-4)


def test_errors_reach_the_client_with_their_message(triton):
    unknown_model, unknown_config, unknown_stats, unknown_input = triton["errors"]
    for error in (unknown_model, unknown_config, unknown_stats):
        assert "no model named 'no-such-model'" in error
    assert "has no input 'WRONG'" in unknown_input


def readme_snippets() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "tritonclient" in b]


def test_the_readme_tritonclient_examples_run(server):
    """As printed, from the repository root, on the example inputs it ships (examples/)."""
    snippets = readme_snippets()
    assert len(snippets) == 2
    for code in snippets:
        code = code.replace("localhost:8000", f"127.0.0.1:{server.http_port}").replace(
            "localhost:50051", f"127.0.0.1:{server.grpc_port}")
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip()
