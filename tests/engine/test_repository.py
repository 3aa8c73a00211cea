"""model.toml validation and registry states."""

import shutil
import textwrap

import pytest

from perceiver_serve.tasks import TASKS
from perceiver_serve.engine import ModelRegistry, ModelRepository, ModelSpec, RepositoryError, SpecProblem
from perceiver_serve.errors import ModelNotFound, NotReady

GOOD = """
task = "text-classification"
source = "checkpoint"
device = "cpu"
dtype = "float32"
[batching]
max_batch_size = 4
max_delay_ms = 2
max_queue = 16
timeout_ms = 5000
"""


def write_model(root, name, toml, checkpoint=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(textwrap.dedent(toml))
    if checkpoint is not None:
        shutil.copytree(checkpoint, folder / "checkpoint")
    return folder


def test_good_spec_parses(tmp_path):
    write_model(tmp_path, "sentiment", GOOD)
    repo = ModelRepository.scan(tmp_path, TASKS)
    (spec,) = repo.specs
    assert isinstance(spec, ModelSpec) and spec.name == "sentiment" and spec.batching.max_batch_size == 4
    assert not repo.problems


@pytest.mark.parametrize(
    "toml, fragments",
    [
        (GOOD.replace("text-classification", "poetry"), ["task", "text-classification"]),
        ("task = 'fill-mask'\n", ["source", "Field required"]),
        (GOOD.replace('dtype = "float32"', 'dtype = "float8"'), ["dtype"]),
        (GOOD.replace("max_batch_size = 4", "max_batch_size = -1"), ["batching.max_batch_size", "greater than"]),
        (GOOD.replace("max_queue = 16", "max_queue = 0"), ["batching.max_queue"]),
        (GOOD.replace("timeout_ms = 5000", "timeout_ms = -5"), ["batching.timeout_ms"]),
        (GOOD + "colour = 'blue'\n", ["colour", "unknown key"]),
        (GOOD.replace("[batching]", "[batching]\nturbo = true"), ["batching.turbo", "unknown key"]),
        (GOOD.replace('device = "cpu"', 'device = "tpu"'), ["device"]),
        (GOOD.replace('device = "cpu"', 'device = "cpu"\ninstances = 0'), ["instances", "greater than"]),
        (GOOD.replace('device = "cpu"', 'device = "cpu"\nthreads = 0'), ["threads", "greater than"]),
        (GOOD.replace('device = "cpu"', 'device = "cpu"\ninstances = 2\ncompile = true'), ["instances", "compiled"]),
        ("task = [unclosed", ["cannot read TOML"]),
        (GOOD + "name = 'other'\n", ["name", "unknown key"]),
    ],
)
def test_bad_specs_name_file_and_field(tmp_path, toml, fragments):
    write_model(tmp_path, "broken", toml)
    (problem,) = ModelRepository.scan(tmp_path, TASKS).problems
    assert isinstance(problem, SpecProblem)
    assert str(tmp_path / "broken" / "model.toml") in problem.message
    for fragment in fragments:
        assert fragment in problem.message, problem.message


def test_invalid_folder_name(tmp_path):
    write_model(tmp_path, ".hidden", GOOD)
    write_model(tmp_path, "ok", GOOD)
    repo = ModelRepository.scan(tmp_path, TASKS)
    assert [p.name for p in repo.problems] == [".hidden"] and "not a valid model name" in repo.problems[0].message


def test_unusable_repository(tmp_path):
    with pytest.raises(RepositoryError, match="not a directory"):
        ModelRepository.scan(tmp_path / "missing", TASKS)
    with pytest.raises(RepositoryError, match="no \\*/model.toml"):
        ModelRepository.scan(tmp_path, TASKS)


def test_offline_hub_source_fails_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_model(tmp_path, "remote", GOOD.replace('source = "checkpoint"', 'source = "hf://deepmind/language-perceiver"'))
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    registry.load_all()
    reason = registry.get("remote").reason
    assert "cannot fetch hf://deepmind/language-perceiver" in reason and "--local-dir" in reason


def test_broken_checkpoint_fails_alone_and_others_serve(tmp_path, text_checkpoint):
    write_model(tmp_path, "good", GOOD, text_checkpoint)
    broken = write_model(tmp_path, "broken", GOOD, text_checkpoint)
    data = (broken / "checkpoint" / "model.safetensors").read_bytes()
    (broken / "checkpoint" / "model.safetensors").write_bytes(data[:100])
    write_model(tmp_path, "badtoml", "task = 'fill-mask'\n")
    write_model(tmp_path, "badopts", GOOD + "[options]\nwarp = 9\n", text_checkpoint)
    write_model(tmp_path, "wrongtask", GOOD.replace("text-classification", "fill-mask"), text_checkpoint)
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    try:
        registry.load_all()
        states = {name: m.state for name, m in registry.models.items()}
        assert states == {"good": "ready", "broken": "failed", "badtoml": "failed", "badopts": "failed",
                          "wrongtask": "failed"}
        assert "model.safetensors" in registry.get("broken").reason
        assert "options.warp" in registry.get("badopts").reason
        assert "cannot serve task 'fill-mask'" in registry.get("wrongtask").reason
        assert not registry.ready
        assert registry.resolve("text-classification", "good").name == "good"
        # The default is not the broken one (first by name): a model that failed never takes it from one that serves.
        assert registry.resolve("text-classification").name == "good"
        with pytest.raises(NotReady, match="failed to load"):
            registry.resolve("text-classification", "broken")
        with pytest.raises(ModelNotFound, match="serves text-classification, not fill-mask"):
            registry.resolve("fill-mask", "good")
        with pytest.raises(ModelNotFound):
            registry.resolve("text-classification", "nope")
        with pytest.raises(ModelNotFound, match="no model"):
            registry.resolve("optical-flow")
    finally:
        registry.stop()


def test_default_flag_picks_the_task_default(tmp_path, text_checkpoint):
    write_model(tmp_path, "alpha", GOOD, text_checkpoint)
    write_model(tmp_path, "beta", GOOD.replace('dtype = "float32"', 'dtype = "float32"\ndefault = true'),
                text_checkpoint)
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    try:
        registry.load_all()
        assert registry.ready
        assert registry.resolve("text-classification").name == "beta"
    finally:
        registry.stop()
