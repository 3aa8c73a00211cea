from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_serve.modeling import load_model

from ..reactive import reactive_models
from ..support import running


@pytest.fixture(scope="session")
def server():
    """The real server (uvicorn, the reactive test models) on a free loopback port, for the whole session."""
    with running(repository=reactive_models()) as proc:
        yield proc


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _spec(task: str) -> tuple[Path, dict]:
    for toml in sorted(reactive_models().glob("*/model.toml")):
        spec = tomllib.loads(toml.read_text())
        if spec["task"] == task:
            return toml.parent, spec
    raise LookupError(task)


def model_dir(task: str) -> Path:
    """The checkpoint of the test model serving ``task``."""
    folder, spec = _spec(task)
    return folder / spec["source"]


def model_options(task: str) -> dict:
    """The ``[options]`` of the test model serving ``task``."""
    return _spec(task)[1]["options"]


@pytest.fixture(scope="session")
def direct():
    """The server's models loaded in the test process, for computing answers without the server."""
    cache: dict[str, torch.nn.Module] = {}

    def get(task: str):
        if task not in cache:
            cache[task] = load_model(model_dir(task))
        return cache[task]

    return get


def png_bytes(array: np.ndarray, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=save.pop("format", "PNG"), **save)
    return out.getvalue()


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


#: Probabilities are float32 softmax outputs in [0, 1]; server and direct runs differ by rounding only.
PROB_TOLERANCE = 1e-5


def assert_top_k(predictions: list[dict], probs: np.ndarray, index_key: str = "index", k: int | None = None,
                 tolerance: float = PROB_TOLERANCE) -> None:
    """Server top-k equals the direct computation, robust to near-ties between candidates.

    Every returned score equals the direct probability of its index, scores come best first,
    and no candidate left out scores higher than the last one returned.
    """
    indices = [p[index_key] for p in predictions]
    scores = [p["score"] for p in predictions]
    assert k is None or len(predictions) == k
    assert len(set(indices)) == len(indices)
    for i, score in zip(indices, scores):
        assert abs(score - probs[i]) <= tolerance
    assert all(a >= b - 1e-7 for a, b in zip(scores, scores[1:]))
    rest = np.delete(probs, indices)
    assert rest.size == 0 or rest.max() <= scores[-1] + tolerance
