"""Loading, reloading and unloading models while the registry serves: leases decide when a copy is freed."""

import asyncio
import shutil

import pytest

from perceiver_serve.engine import ModelRegistry, ModelRepository, RepositoryError
from perceiver_serve.engine.repository import InvalidModelName
from perceiver_serve.errors import ModelNotFound
from perceiver_serve.metrics import Metrics
from perceiver_serve.tasks import TASKS

from ..support import metric_value
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


# -- what a failed load leaves in the metrics and in readiness ------------------------------------------

@pytest.fixture
def observed(tmp_path, text_checkpoint):
    """A registry serving "sentiment", reporting to a real server's metrics."""
    write_model(tmp_path, "sentiment", GOOD, text_checkpoint)
    metrics = Metrics()
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS), observer=metrics)
    registry.load_all()
    yield registry, metrics
    registry.stop()


def events(metrics: Metrics, name: str) -> dict[tuple[str, str], float]:
    """The model's load/reload/unload counts by (event, outcome), those that happened."""
    counts = {(event, outcome): metric_value(metrics.exposition().decode(), "perceiver_model_events_total",
                                             model=name, event=event, outcome=outcome)
              for event in ("load", "reload", "unload") for outcome in ("success", "failure")}
    return {key: value for key, value in counts.items() if value}


def model_ready(metrics: Metrics, name: str, version: str = "1") -> float | None:
    """``perceiver_model_ready`` of one version; None when it has no series."""
    found = [line for line in metrics.exposition().decode().splitlines()
             if line.startswith(f'perceiver_model_ready{{model="{name}",version="{version}"}}')]
    return float(found[0].split()[-1]) if found else None


def test_a_failed_reload_keeps_the_serving_version_reported_ready(observed, tmp_path):
    registry, metrics = observed
    toml = tmp_path / "sentiment" / "model.toml"
    toml.write_text(toml.read_text().replace('source = "checkpoint"', 'source = "missing"'))
    answer = registry.load("sentiment")
    assert answer.state == "ready" and "reload failed" in answer.reason
    assert model_ready(metrics, "sentiment") == 1.0  # a copy serves: an alert on == 0 must stay quiet
    assert events(metrics, "sentiment") == {("load", "success"): 1, ("reload", "failure"): 1}


@pytest.mark.parametrize("broken", [
    "task = [unclosed\n",
    GOOD.replace("text-classification", "poetry"),
    GOOD.replace('dtype = "float32"', 'dtype = "float8"'),
    GOOD.replace("max_batch_size = 4", "max_batch_size = -3"),
    GOOD + "colour = 'blue'\n",
], ids=["toml", "task", "dtype", "max_batch_size", "unknown_key"])
def test_every_failed_reload_is_counted_once_whatever_failed(observed, tmp_path, broken):
    registry, metrics = observed
    (tmp_path / "sentiment" / "model.toml").write_text(broken)
    answer = registry.load("sentiment")
    assert answer.state == "ready" and "reload failed" in answer.reason
    assert events(metrics, "sentiment") == {("load", "success"): 1, ("reload", "failure"): 1}
    assert model_ready(metrics, "sentiment") == 1.0


def test_a_new_model_that_fails_is_counted_and_reported_but_the_server_stays_ready(observed, tmp_path,
                                                                                  text_checkpoint):
    registry, metrics = observed
    write_model(tmp_path, "no-weights", GOOD.replace('source = "checkpoint"', 'source = "missing"'))
    write_model(tmp_path, "bad-toml", "task = [unclosed\n")
    for name in ("no-weights", "bad-toml"):
        assert registry.load(name).state == "failed"
        assert events(metrics, name) == {("load", "failure"): 1}
        assert model_ready(metrics, name) == 0.0  # failed: what the alert is for
    assert registry.ready  # the models it serves are all ready: no reason to leave the load balancer

    # Once loaded, a model is one the server must serve: losing every copy of it makes it unready.
    write_model(tmp_path, "added", GOOD, text_checkpoint)
    assert registry.load("added").state == "ready" and registry.ready
    toml = tmp_path / "added" / "model.toml"
    toml.write_text(toml.read_text().replace('source = "checkpoint"', 'source = "missing"'))
    assert registry.load("added").state == "ready" and registry.ready  # the old copy still serves
    registry.unload("added")
    assert registry.ready  # unloaded on purpose


def test_a_model_the_start_meant_to_serve_keeps_the_server_unready_until_it_serves(tmp_path, text_checkpoint):
    write_model(tmp_path, "good", GOOD, text_checkpoint)
    folder = write_model(tmp_path, "late", GOOD.replace('source = "checkpoint"', 'source = "missing"'))
    write_model(tmp_path, "bad-toml", "task = [unclosed\n")
    metrics = Metrics()
    registry = ModelRegistry(ModelRepository.scan(tmp_path, TASKS), observer=metrics)
    try:
        registry.load_all()
        assert not registry.ready
        assert events(metrics, "late") == {("load", "failure"): 1}
        assert events(metrics, "bad-toml") == {("load", "failure"): 1}  # a broken model.toml is a failed load too
        shutil.copytree(text_checkpoint, folder / "missing")
        assert registry.load("late").state == "ready"
        assert not registry.ready  # "bad-toml" was meant to serve too
        registry.unload("bad-toml")
        assert registry.ready
    finally:
        registry.stop()


def test_requests_label_their_metrics_only_with_names_of_models(observed):
    """A request may name anything; a series per made-up name would grow /metrics without end."""
    registry, metrics = observed
    for name in ("sentiment", "rand-aaa1", ""):
        metrics.observe_request(name, "ModelInfer", "oip", "NOT_FOUND", 0.01)
    text = metrics.exposition().decode()
    assert "rand-aaa1" not in text
    labels = dict(model="", endpoint="ModelInfer", protocol="oip", status="NOT_FOUND")
    assert metric_value(text, "perceiver_requests_total", **labels) == 2
    assert metric_value(text, "perceiver_requests_total", **{**labels, "model": "sentiment"}) == 1
