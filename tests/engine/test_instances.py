"""instances / threads / worker in model.toml: several worker threads, or worker processes, serve one model,
with the same answers."""

import asyncio
import os

import numpy as np
import pytest
from google.protobuf import json_format

from perceiver_serve.engine import ModelRegistry, ModelRepository
from perceiver_serve.modeling import ByteTokenizer
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.tasks import TASKS

from .test_repository import GOOD, write_model
from .test_worker_process import alive


@pytest.fixture(scope="module")
def registry(tmp_path_factory, text_checkpoint):
    root = tmp_path_factory.mktemp("instances-repo")
    write_model(root, "one", GOOD, text_checkpoint)
    write_model(root, "two", GOOD.replace('device = "cpu"', 'device = "cpu"\ninstances = 2\nthreads = 1'),
                text_checkpoint)
    write_model(root, "processes", GOOD.replace('device = "cpu"',
                                                'device = "cpu"\ninstances = 2\nthreads = 1\nworker = "process"'),
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


def test_a_model_in_worker_processes_answers_as_in_threads(registry):
    served = registry.get("processes")
    info = served.describe()
    assert info["state"] == "ready", info.get("reason")
    assert (info["worker"], info["instances"], info["threads_per_instance"]) == ("process", 2, 1)
    pids = info["worker_pids"]
    assert len(set(pids)) == 2 and os.getpid() not in pids and all(map(alive, pids))
    assert registry.get("two").describe()["worker"] == "thread"
    assert not any(p.requires_grad or p.device.type != "meta" for p in served.model.parameters())  # no weights here
    tokenizer = ByteTokenizer()
    texts = [tokenizer.encode(f"text {i} " + "x" * (i * 7 % 20)) for i in range(12)]

    async def answers(name):
        batcher = registry.get(name).batcher
        return await asyncio.gather(*(batcher.submit(t) for t in texts))

    in_threads, in_processes = asyncio.run(answers("two")), asyncio.run(answers("processes"))
    assert served.batcher.forward_passes > 2
    for a, b in zip(in_threads, in_processes, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_unloading_a_model_ends_its_worker_processes(registry):
    served = registry.get("processes")
    pids = served.describe()["worker_pids"]
    registry.unload("processes")
    assert served.freed.wait(30)
    assert not any(map(alive, pids))
