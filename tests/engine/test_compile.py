"""compile = true: the warm-up runs every served shape, so serving never compiles."""

import random

import pytest
import torch

from perceiver_serve.tasks import TASKS
from perceiver_serve.engine import ModelRegistry, ModelRepository
from perceiver_serve.modeling import ByteTokenizer
from perceiver_serve.modeling.compiled import bucket_length, compiled_graphs, length_buckets

from .test_repository import GOOD, write_model


@pytest.fixture(scope="module")
def compiled_registry(tmp_path_factory, text_checkpoint):
    root = tmp_path_factory.mktemp("compiled-repo")
    write_model(root, "compiled", "compile = true\n" + GOOD, text_checkpoint)
    write_model(root, "eager", GOOD, text_checkpoint)
    messages: list[str] = []
    registry = ModelRegistry(ModelRepository.scan(root, TASKS), progress=messages.append)
    registry.load_all()
    yield registry, messages
    registry.stop()


def test_compiled_model_is_ready_after_warming_every_served_shape(compiled_registry):
    registry, messages = compiled_registry
    served = registry.get("compiled")
    assert served.state == "ready", served.reason
    assert served.model.compiled and served.describe()["compile"] is True
    assert any("compiling: warming" in m for m in messages) and any("compiling: shape" in m for m in messages)
    graphs = compiled_graphs()
    assert graphs > 0
    rng = random.Random(0)
    max_text = served.runner.tokenizer.max_text_bytes
    with torch.inference_mode():
        for size in range(1, served.spec.batching.max_batch_size + 1):
            for longest in (1, max_text // 2, max_text, *(rng.randint(1, max_text) for _ in range(3))):
                texts = [[ByteTokenizer.CLS] + [7] * rng.randint(1, longest) for _ in range(size - 1)]
                served.runner.run([*texts, [ByteTokenizer.CLS] + [7] * longest])
    assert compiled_graphs() == graphs  # no served shape compiled after the warm-up


def test_compiled_answers_equal_eager(compiled_registry):
    registry, _ = compiled_registry
    texts = [ByteTokenizer().encode(t) for t in ("short", "a longer text to classify here")]
    with torch.inference_mode():
        compiled = registry.get("compiled").runner.run(texts)
        eager = registry.get("eager").runner.run(texts)
    for a, b in zip(compiled, eager):
        assert abs(a - b).max() < 1e-4


def test_length_buckets():
    assert length_buckets(2048) == [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
    assert length_buckets(40) == [16, 24, 32, 40]
    assert [bucket_length(n, 40) for n in (1, 16, 17, 33, 40)] == [16, 16, 24, 40, 40]
