"""The load test again, on int8, compiled and worker-process models: no 5xx, nothing lost, flat memory,
answers as alone.

One server holds the text model three times more: ``dtype = "int8"``, ``compile = true``, and two
instances in worker processes (``worker = "process"``). 64 clients send the load test's texts to
all three, in turn. A compiled model computes in float32 at a padded length bucket, and a worker
process computes in float32 as the server would, so their answers must equal the float32 answers
computed alone; the memory that must stay flat is the server's with its worker processes'. An
int8 model quantizes each batch's activations with that batch's own range, so its answer to
a text moves a little with its batch-mates: each must stay within twice the largest int8
difference measured alone at batch sizes 1, 8 and 32 (what the float32 load test checks
exactly, whose caller an answer goes to, is the batcher's work and does not depend on dtype).
"""

from __future__ import annotations

import asyncio
import re
import shutil

import aiohttp
import httpx
import numpy as np
import psutil
import pytest
import torch

from perceiver_serve.modeling import ByteTokenizer, load_model

from ..api.conftest import direct, model_dir  # noqa: F401 - direct is a fixture (of inputs)
from ..numerics import assert_close
from ..support import rss_bytes, running
from .repository import repository
from .test_load import CLIENTS, RSS_GROWTH, TEXT_TOLERANCE, Job, Reply, inputs, post, run  # noqa: F401 - inputs is a fixture

VARIANTS = {"text-int8": {"dtype": '"int8"'}, "text-compiled": {"compile": "true"},
            "text-processes": {"worker": '"process"', "instances": "2", "threads": "1"}}
WARM_UP, MEASURED = 1500, 3000


@pytest.fixture(scope="module")
def variant_server(tmp_path_factory):
    root = repository(tmp_path_factory.mktemp("variants-repo"), "text-sentiment")
    for name, settings in VARIANTS.items():
        shutil.copytree(root / "text-sentiment", root / name)
        toml = root / name / "model.toml"
        text = toml.read_text().replace("default = true", "default = false")
        for key, value in settings.items():  # top-level keys: replaced where present, else put first
            text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
            text = text if found else f"{key} = {value}\n{text}"
        toml.write_text(text)
    with running(repository=root) as proc:
        yield proc


@pytest.fixture(scope="module")
def int8_tolerance(inputs):
    """Twice the largest difference of int8 from float32 on these texts alone, at batch sizes 1, 8 and 32."""
    checkpoint = model_dir("text-classification")
    quantized = load_model(checkpoint, dtype="int8")
    tokenizer = ByteTokenizer(quantized.config.max_position_embeddings)
    largest = 0.0
    with torch.inference_mode():
        for size in (1, 8, 32):
            for start in range(0, len(inputs.texts), size):
                ids, mask = tokenizer.batch([tokenizer.encode(t) for t in inputs.texts[start:start + size]])
                got = quantized(ids, mask).numpy()
                largest = max(largest, float(np.abs(got - inputs.text_logits[start:start + size]).max()))
    return 2 * largest


def _model(job: Job) -> str:
    return list(VARIANTS)[job.key % len(VARIANTS)]


def _send(inputs):
    def send(job: Job, session: aiohttp.ClientSession):
        return post(session, "/classify/text", body={"text": inputs.texts[job.key], "return_logits": True,
                                                     "model": _model(job)})
    return send


def _check(inputs, tolerance: float):
    def check(job: Job, r: Reply) -> None:
        body = r.json()
        (result,) = body["results"]
        assert body["model"] == _model(job)
        logits = np.asarray(result["logits"], np.float32)
        assert logits.shape == inputs.text_logits[job.key].shape and np.isfinite(logits).all()
        if _model(job) in ("text-compiled", "text-processes"):
            assert_close(logits, inputs.text_logits[job.key], TEXT_TOLERANCE)
        else:
            difference = float(np.abs(logits - inputs.text_logits[job.key]).max())
            assert difference <= tolerance, f"int8 answer {difference:.3g} from float32, allowed {tolerance:.3g}"
    return check


def _rss_with_workers(pid: int) -> int:
    return rss_bytes(pid) + sum(rss_bytes(child.pid) for child in psutil.Process(pid).children(recursive=True))


def test_int8_compiled_and_process_models_under_load_answer_as_alone_with_flat_memory(variant_server, inputs,
                                                                                      int8_tolerance):
    models = {m["name"]: m for m in httpx.get(variant_server.url + "/models", timeout=30).json()["models"]}
    assert models["text-int8"]["dtype"] == "int8" and models["text-compiled"]["compile"] is True
    assert models["text-processes"]["worker"] == "process" and len(models["text-processes"]["worker_pids"]) == 2

    def texts(count: int, seed: int) -> list[Job]:
        return [Job("text", int(k)) for k in np.random.default_rng(seed).integers(len(inputs.texts), size=count)]

    send, check = _send(inputs), _check(inputs, int8_tolerance)
    warm = asyncio.run(run(variant_server.url, texts(WARM_UP, 1), inputs, send=send, check=check))
    assert not warm.lost and not warm.wrong, (warm.lost[:5], warm.wrong[:5])
    before = _rss_with_workers(variant_server.process.pid)
    outcome = asyncio.run(run(variant_server.url, texts(MEASURED, 2), inputs, send=send, check=check))
    after = _rss_with_workers(variant_server.process.pid)
    print(f"\nint8 + compiled + worker-process load: {MEASURED} requests by {CLIENTS} clients in {outcome.seconds:.1f} s, statuses "
          f"{dict(outcome.statuses)}, int8 tolerance {int8_tolerance:.3g}; server and worker RSS {before / 2**20:.0f} -> "
          f"{after / 2**20:.0f} MiB")
    assert not outcome.lost, outcome.lost[:10]
    assert not outcome.wrong, outcome.wrong[:10]
    assert outcome.statuses == {200: MEASURED}, outcome.statuses
    assert after <= before * (1 + RSS_GROWTH), f"RSS grew from {before / 2**20:.0f} to {after / 2**20:.0f} MiB"
