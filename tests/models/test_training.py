"""``scripts/train_demo_models.py --quick``: every trainer runs end to end and writes a servable model folder."""

import json

import pytest
import torch

from perceiver_serve.engine.repository import ModelRepository
from perceiver_serve.modeling import load_model
from perceiver_serve.tasks import TASKS

from .repository import REPOSITORY, TRAIN_SCRIPT, demo_folders, load_script, read_toml, trained_folders


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    script = load_script(TRAIN_SCRIPT)
    threads = torch.get_num_threads()
    try:
        script.main(["--quick", "--out", str(out), "--examples", str(out / "examples"), "--only", *script.TRAINERS])
    finally:  # the script sets each trainer's thread count for the process: leave later tests theirs
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("committed", trained_folders(), ids=lambda p: p.name)
def test_quick_training_writes_the_committed_kind_of_model(quick_run, committed):
    folder = quick_run / committed.name
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == ["config.json", "model.safetensors"]
    assert read_toml(folder) == read_toml(committed)  # same task, batching and options
    config = json.loads((folder / "checkpoint" / "config.json").read_text())
    assert config == json.loads((committed / "checkpoint" / "config.json").read_text())  # labels included
    assert load_model(folder / "checkpoint").config.id2label == load_model(committed / "checkpoint").config.id2label
    card = (folder / "README.md").read_text()
    assert "## Held-out results" in card and "## Data" in card and "## Limits" in card


def test_every_trainer_writes_a_valid_repository(quick_run):
    repository = ModelRepository.scan(quick_run, TASKS)
    assert not repository.problems
    assert sorted(spec.name for spec in repository.specs) == sorted(load_script(TRAIN_SCRIPT).TRAINERS)
    assert {spec.task for spec in repository.specs} == {read_toml(f)["task"] for f in demo_folders()}


def test_committed_examples_are_what_the_script_writes(quick_run):
    written = sorted((quick_run / "examples").iterdir())
    assert written
    for path in written:
        assert (REPOSITORY.parent / "examples" / path.name).read_bytes() == path.read_bytes(), path.name
