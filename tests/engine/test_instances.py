"""instances / threads in model.toml: several worker threads serve one model, with the same answers."""

import asyncio

import numpy as np
import pytest
from google.protobuf import json_format

from perceiver_serve.engine import ModelRegistry, ModelRepository
from perceiver_serve.modeling import ByteTokenizer
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.tasks import TASKS

from .test_repository import GOOD, write_model


@pytest.fixture(scope="module")
def registry(tmp_path_factory, text_checkpoint):
    root = tmp_path_factory.mktemp("instances-repo")
    write_model(root, "one", GOOD, text_checkpoint)
    write_model(root, "two", GOOD.replace('device = "cpu"', 'device = "cpu"\ninstances = 2\nthreads = 1'),
                text_checkpoint)
    registry = ModelRegistry(ModelRepository.scan(root, TASKS), progress=lambda message: None)
    registry.load_all()
    yield registry
    registry.stop()


def test_models_show_their_instances_and_threads(registry):
    two = registry.get("two").describe()
    assert two["state"] == "ready", two.get("reason")
    assert (two["instances"], two["threads_per_instance"]) == (2, 1)
    assert registry.get("one").describe()["instances"] == 1
    reply = json_format.ParseDict({"models": [two]}, pb.ListModelsResponse())
    assert (reply.models[0].instances, reply.models[0].threads_per_instance) == (2, 1)


def test_two_instances_answer_exactly_as_one(registry):
    tokenizer = ByteTokenizer()
    texts = [tokenizer.encode(f"text {i} " + "x" * (i * 7 % 20)) for i in range(12)]  # max_queue = 16

    async def answers(name):
        batcher = registry.get(name).batcher
        return await asyncio.gather(*(batcher.submit(t) for t in texts))

    one, two = asyncio.run(answers("one")), asyncio.run(answers("two"))
    assert registry.get("two").batcher.forward_passes > 2  # warm-ups and more than one batch
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
