"""Loading, reloading and unloading models while the registry serves: leases decide when a copy is freed."""

import asyncio
import shutil

import pytest

from perceiver_serve.engine import ModelRegistry, ModelRepository, RepositoryError
from perceiver_serve.engine.repository import InvalidModelName
from perceiver_serve.errors import ModelNotFound
from perceiver_serve.tasks import TASKS

from .test_repository import GOOD, write_model

TASK = "text-classification"


@pytest.fixture
def registry(tmp_path, text_checkpoint):
    write_model(tmp_path, "sentiment", GOOD, text_checkpoint)
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    registry.load_all()
    yield registry
    registry.stop()


def test_a_reload_frees_the_old_copy_only_when_its_last_lease_ends(registry):
    with registry.lease(TASK, "sentiment") as old:
        reloaded = registry.load("sentiment")
        assert reloaded is not old and reloaded.state == "ready"
        with registry.lease(TASK) as new:
            assert new is reloaded  # new requests get the new copy at once
        assert old.retired and old.model is not None and not old.freed.is_set()
        result = asyncio.run(old.batcher.submit(old.runner.warmup_payloads()[0]))  # the old copy still answers
        assert result is not None
    assert old.freed.wait(30)
    assert old.model is None and old.batcher is None
    assert registry.get("sentiment") is reloaded


def test_a_failed_reload_keeps_the_old_copy_serving(registry, tmp_path):
    serving = registry.get("sentiment")
    weights = tmp_path / "sentiment" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    answer = registry.load("sentiment")
    assert answer is serving and answer.state == "ready"
    assert "reload failed" in answer.reason and "model.safetensors" in answer.reason
    with registry.lease(TASK) as served:
        assert served is serving


def test_unload_refuses_new_requests_and_frees_after_the_last(registry):
    with registry.lease(TASK, "sentiment") as held:
        registry.unload("sentiment")
        assert held.state == "unloading" and held.model is not None
        with pytest.raises(ModelNotFound, match="not loaded"):
            with registry.lease(TASK, "sentiment"):
                pass
        with pytest.raises(ModelNotFound):
            with registry.lease(TASK):
                pass
    assert held.freed.wait(30)
    assert registry.get("sentiment").state == "unavailable"
    assert registry.ready  # an unloaded model is not one the server waits for
    assert registry.load("sentiment").state == "ready"


def test_a_deleted_folder_leaves_the_list_once_unloaded(registry, tmp_path):
    shutil.rmtree(tmp_path / "sentiment")
    served = registry.unload("sentiment")
    assert served.freed.wait(30)
    assert "sentiment" not in registry.models


@pytest.mark.parametrize("name", ["../etc", "..", ".hidden", "a/b", "/abs", "x" * 65, "", "a\\b", "a\x00"])
def test_names_resolve_only_inside_the_repository(registry, name):
    with pytest.raises(InvalidModelName):
        registry.load(name)
    with pytest.raises(InvalidModelName):
        registry.unload(name)


def test_a_new_folder_loads_and_an_unknown_one_is_not_found(registry, tmp_path, text_checkpoint):
    with pytest.raises(ModelNotFound):
        registry.load("nope")
    write_model(tmp_path, "added", GOOD, text_checkpoint)
    assert registry.load("added").state == "ready"
    with registry.lease(TASK, "added") as served:
        assert served.name == "added"


def test_load_only_starts_the_named_models(tmp_path, text_checkpoint):
    write_model(tmp_path, "one", GOOD, text_checkpoint)
    write_model(tmp_path, "two", GOOD, text_checkpoint)
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS), load_only=["two"])
    try:
        registry.load_all()
        assert {n: m.state for n, m in registry.models.items()} == {"one": "unavailable", "two": "ready"}
        assert registry.ready and registry.defaults == {TASK: "two"}
    finally:
        registry.stop()
    with pytest.raises(RepositoryError, match="three"):
        ModelRegistry(ModelRepository.scan(tmp_path, TASKS), load_only=["three"])


def versioned(root, checkpoint, versions, policy=""):
    folder = write_model(root, "multi", GOOD.replace("source = \"checkpoint\"\n", policy))
    for version in versions:
        shutil.copytree(checkpoint, folder / str(version))
    return folder


def test_versions_default_to_the_newest_and_can_be_named(tmp_path, text_checkpoint):
    versioned(tmp_path, text_checkpoint, (1, 2, 10), 'version_policy = "all"\n')
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    try:
        registry.load_all()
        assert sorted(registry.versions["multi"], key=int) == ["1", "2", "10"]
        with registry.lease(TASK, "multi") as newest, registry.lease(TASK, "multi", "1") as first:
            assert newest.version == "10" and first.version == "1"
        with pytest.raises(ModelNotFound, match="no version '3'"):
            registry.resolve(TASK, "multi", "3")
    finally:
        registry.stop()


def test_a_narrower_policy_unloads_the_versions_it_drops(tmp_path, text_checkpoint):
    folder = versioned(tmp_path, text_checkpoint, (1, 2), "version_policy = { latest = 2 }\n")
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS))
    try:
        registry.load_all()
        first = registry.versions["multi"]["1"]
        toml = folder / "model.toml"
        toml.write_text(toml.read_text().replace("latest = 2", "latest = 1"))
        assert registry.load("multi").version == "2"
        assert first.freed.wait(30) and first.state == "unavailable"
        assert list(registry.versions["multi"]) == ["2"]
        with pytest.raises(ModelNotFound, match="no version '1'"):
            registry.resolve(TASK, "multi", "1")
        toml.write_text(toml.read_text().replace("{ latest = 1 }", "{ specific = [1] }"))
        assert registry.load("multi").version == "1"
    finally:
        registry.stop()
