"""Model control while serving, against real server processes: load, reload under load, unload,
broken reloads, the repository poller, keys and names. Every wait is on a state, never a sleep."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from perceiver_serve.pb.perceiver.v1 import perceiver_pb2 as pb
from perceiver_serve.pb.perceiver.v1 import perceiver_pb2_grpc

from ..support import DEMO_MODELS, grpc_channel, metric_value, rss_bytes, running, wait_for

ADMIN, API = "admin-secret", "model-secret"
OLD = ("old-negative", "old-positive")
NEW = ("new-negative", "new-positive")


def copy_model(root: Path, name: str, source: str = "text-sentiment", labels: tuple[str, ...] | None = None) -> Path:
    folder = root / name
    shutil.copytree(DEMO_MODELS / source, folder)
    if labels:
        set_labels(folder, labels)
    return folder


def set_labels(folder: Path, labels: tuple[str, ...]) -> None:
    path = folder / "checkpoint" / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): label for i, label in enumerate(labels)}
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    path.write_text(json.dumps(config))


def index(client: httpx.Client, **kwargs) -> dict[str, dict]:
    answer = client.post("/v2/repository/index", **kwargs)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def classify(client: httpx.Client, model: str) -> httpx.Response:
    return client.post("/classify/text", json={"text": "a fine day", "model": model, "top_k": 2}, headers=bearer(API))


def labels_of(answer: httpx.Response) -> tuple[str, ...]:
    return tuple(sorted(p["label"] for p in answer.json()["results"][0]["predictions"]))


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    root = tmp_path_factory.mktemp("explicit-repo")
    copy_model(root, "base")
    with running("--model-control", "explicit", "--load-model", "base", "--api-key", API, "--admin-key", ADMIN,
                 repository=root, grpc=True) as proc:
        with httpx.Client(base_url=proc.url, timeout=120) as client:
            yield root, proc, client


def test_explicit_mode_loads_only_the_named_model(explicit):
    root, _, client = explicit
    copy_model(root, "idle")
    states = index(client, headers=bearer(ADMIN))
    assert states["base"]["state"] == "READY" and states["idle"]["state"] == "UNAVAILABLE"
    assert index(client, headers=bearer(ADMIN), json={"ready": True}).keys() == {"base"}
    assert classify(client, "idle").json()["error"]["code"] == "model_not_found"


def test_add_load_reload_under_load_and_unload(explicit):
    root, proc, client = explicit
    folder = copy_model(root, "added", labels=OLD)
    loaded = client.post("/v2/repository/models/added/load", headers=bearer(ADMIN))
    assert loaded.status_code == 200 and loaded.json() == {"name": "added", "state": "READY"}, loaded.text
    assert labels_of(classify(client, "added")) == tuple(sorted(OLD))

    set_labels(folder, NEW)
    answers: list[tuple[float, int, tuple[str, ...] | str]] = []  # (sent at, status, labels or error)
    acknowledged: list[float] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=proc.url, timeout=120) as own:
            while not stop.is_set():
                sent = time.monotonic()
                answer = classify(own, "added")
                answers.append((sent, answer.status_code,
                                labels_of(answer) if answer.status_code == 200 else answer.text))

    threads = [threading.Thread(target=client_loop) for _ in range(16)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 32, what="answers before the reload")
        reload = client.post("/v2/repository/models/added/load", headers=bearer(ADMIN))
        acknowledged.append(time.monotonic())
        assert reload.status_code == 200, reload.text
        wait_for(lambda: sum(sent > acknowledged[0] for sent, _, _ in list(answers)) >= 48,
                 what="answers after the reload")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:3]
    assert {labels for _, _, labels in answers} <= {tuple(sorted(OLD)), tuple(sorted(NEW))}
    assert any(labels == tuple(sorted(OLD)) for _, _, labels in answers)
    after = [labels for sent, _, labels in answers if sent > acknowledged[0]]
    assert after and set(after) == {tuple(sorted(NEW))}

    unloaded = client.post("/v2/repository/models/added/unload", headers=bearer(ADMIN))
    assert unloaded.status_code == 200 and unloaded.json()["state"] in ("UNLOADING", "UNAVAILABLE")
    refused = classify(client, "added")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    wait_for(lambda: index(client, headers=bearer(ADMIN))["added"]["state"] == "UNAVAILABLE", what="unloaded")
    listed = {m["name"]: m for m in client.get("/models", headers=bearer(API)).json()["models"]}
    assert listed["added"]["state"] == "unavailable"
    assert client.get("/health/ready").status_code == 200  # an unloaded model is not waited for
    metrics = client.get("/metrics").text
    assert 'perceiver_model_events_total{event="reload",model="added",outcome="success"} 1.0' in metrics
    assert 'perceiver_model_events_total{event="unload",model="added",outcome="success"} 1.0' in metrics
    assert 'perceiver_model_ready{model="added"' not in metrics  # unloaded on purpose: no series to alert on
    assert "model 'added' version 1 released" in proc.logs()


def test_a_broken_reload_keeps_the_old_copy_serving(explicit):
    root, _, client = explicit
    folder = copy_model(root, "fragile", labels=OLD)
    assert client.post("/v2/repository/models/fragile/load", headers=bearer(ADMIN)).status_code == 200
    weights = folder / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    set_labels(folder, NEW)
    failed = client.post("/v2/repository/models/fragile/load", headers=bearer(ADMIN))
    assert failed.status_code == 400 and failed.json()["code"] == "load_failed"
    assert "model.safetensors" in failed.json()["error"]  # the protocol's {"error": "<message>"}, with our code
    served = classify(client, "fragile")
    assert served.status_code == 200 and labels_of(served) == tuple(sorted(OLD))
    entry = index(client, headers=bearer(ADMIN))["fragile"]
    assert entry["state"] == "READY" and "reload failed" in entry["reason"]
    metrics = client.get("/metrics").text
    assert 'perceiver_model_events_total{event="reload",model="fragile",outcome="failure"} 1.0' in metrics


@pytest.mark.parametrize("route", ["/v2/repository/index", "/v2/repository/models/base/load",
                                   "/v2/repository/models/base/unload"])
def test_control_needs_the_admin_key(explicit, route):
    _, _, client = explicit
    for headers in ({}, bearer(API), bearer("wrong"), {"Authorization": ADMIN}):
        answer = client.post(route, headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthenticated", headers
        assert "admin key" in answer.json()["error"]
    assert client.post("/classify/text", json={"text": "x"}, headers=bearer(ADMIN)).status_code == 401
    assert index(client, headers=bearer(ADMIN))["base"]["state"] == "READY"


@pytest.mark.parametrize("name", ["..", ".hidden", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", "a%5Cb", "x" * 65,
                                  "..%2Fexplicit-repo0%2Fbase"])
def test_names_stay_inside_the_repository(explicit, name):
    _, _, client = explicit
    for action in ("load", "unload"):
        answer = client.post(f"/v2/repository/models/{name}/{action}", headers=bearer(ADMIN))
        assert answer.status_code in (400, 404), answer.text
        assert answer.json()["code"] in ("invalid_model_name", "not_found", "model_not_found")
        assert isinstance(answer.json()["error"], str)
    assert index(client, headers=bearer(ADMIN)).keys() >= {"base"}


def test_without_model_control_the_repository_is_only_listed(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        states = index(client)
        assert states and all(entry["state"] == "READY" for entry in states.values())
        assert client.post("/v2/repository/models/text-sentiment/unload").status_code == 404
        assert client.post("/v2/repository/models/text-sentiment/load").status_code == 404


def test_poll_mode_follows_the_repository(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    copy_model(root, "base")
    with running("--model-control", "poll", "--repository-poll-s", "0.5", "--api-key", API, repository=root) as proc, \
            httpx.Client(base_url=proc.url, timeout=60, headers=bearer(API)) as client:
        assert httpx.post(f"{proc.url}/v2/repository/index").status_code == 401  # the API key guards control
        staging = tmp_path / "staging"
        staging.mkdir()
        copy_model(staging, "arrived")
        shutil.move(staging / "arrived", root / "arrived")
        wait_for(lambda: index(client).get("arrived", {}).get("state") == "READY", what="the copied-in model")
        assert classify(client, "arrived").status_code == 200

        shutil.rmtree(root / "arrived")
        wait_for(lambda: "arrived" not in index(client), what="the deleted model to go")
        assert classify(client, "arrived").json()["error"]["code"] == "model_not_found"

        # A checkpoint written in small pieces, each soon after the last, is never loaded half-written.
        slow = copy_model(staging, "slow")
        weights = (slow / "checkpoint" / "model.safetensors").read_bytes()
        (slow / "checkpoint" / "model.safetensors").unlink()
        shutil.move(slow, root / "slow")
        with open(root / "slow" / "checkpoint" / "model.safetensors", "wb") as out:
            for start in range(0, len(weights), 8192):
                out.write(weights[start:start + 8192])
                out.flush()
                time.sleep(0.02)  # the writer's pace (well inside the 0.5 s poll interval), not a wait on the server
        wait_for(lambda: index(client).get("slow", {}).get("state") == "READY", what="the slowly written model")
        metrics = client.get("/metrics").text
        assert 'perceiver_model_events_total{event="load",model="slow",outcome="failure"}' not in metrics
        assert "'slow' failed" not in proc.logs()


def test_twenty_reloads_keep_memory_flat(tmp_path):
    copy_model(tmp_path, "image", source="image-classifier")
    with running("--model-control", "explicit", "--load-model", "image", repository=tmp_path) as proc, \
            httpx.Client(base_url=proc.url, timeout=120) as client:
        rss = []
        for cycle in range(1, 21):
            assert client.post("/v2/repository/models/image/load").status_code == 200
            wait_for(lambda done=cycle: proc.logs().count("model 'image' version 1 released") >= done,
                     what="the old copy freed")
            rss.append(rss_bytes(proc.process.pid))
        assert max(rss) <= rss[0] * 1.10, [round(r / 2**20) for r in rss]


def test_versions_newest_by_default_named_on_request_and_dropped_by_policy(explicit):
    root, proc, client = explicit
    folder = root / "multi"
    folder.mkdir()
    toml = (DEMO_MODELS / "text-sentiment" / "model.toml").read_text().replace('source = "checkpoint"\n', "")
    (folder / "model.toml").write_text(toml.replace("default = true", 'default = false\nversion_policy = "all"'))
    for version, labels in (("1", OLD), ("2", NEW)):
        shutil.copytree(DEMO_MODELS / "text-sentiment" / "checkpoint", folder / version)
        config = folder / version / "config.json"
        data = json.loads(config.read_text())
        data["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config.write_text(json.dumps(data))
    assert client.post("/v2/repository/models/multi/load", headers=bearer(ADMIN)).status_code == 200
    assert labels_of(classify(client, "multi")) == tuple(sorted(NEW))
    named = client.post("/classify/text", json={"text": "x", "model": "multi", "version": "1", "top_k": 2},
                        headers=bearer(API))
    assert labels_of(named) == tuple(sorted(OLD))
    assert labels_of(client.post("/classify/text?version=1", json={"text": "x", "model": "multi", "top_k": 2},
                                 headers=bearer(API))) == tuple(sorted(OLD))
    # The Open Inference Protocol: /versions/{v} names one, without it the newest answers.
    tensors = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    for path, labels in (("/v2/models/multi/versions/1/infer", OLD), ("/v2/models/multi/infer", NEW),
                         ("/v2/models/multi/versions/2/infer", NEW)):
        answer = client.post(path, json=tensors, headers=bearer(API))
        assert answer.status_code == 200, answer.text
        label = next(o for o in answer.json()["outputs"] if o["name"] == "LABEL")["data"][0]
        assert label in labels and answer.json()["model_version"] == path.split("/")[-2].replace("multi", "2")
    assert client.get("/v2/models/multi", headers=bearer(API)).json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/multi/versions/1/ready", headers=bearer(API)).status_code == 200
    assert client.get("/v2/models/multi/versions/3", headers=bearer(API)).status_code == 404
    with grpc_channel(proc.grpc_port) as channel:
        stub = perceiver_pb2_grpc.PerceiverStub(channel)
        metadata = (("authorization", f"Bearer {API}"),)
        first = stub.ClassifyText(pb.ClassifyTextRequest(texts=["x"], model="multi", version="1", top_k=2),
                                  metadata=metadata)
        assert sorted(p.label for p in first.results[0].predictions) == sorted(OLD)
        listed = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), metadata=metadata).models}
        assert listed["multi"].version == "2" and [v.version for v in listed["multi"].versions] == ["1", "2"]
    entries = [e for e in client.post("/v2/repository/index", headers=bearer(ADMIN)).json() if e["name"] == "multi"]
    assert [(e["version"], e["state"]) for e in entries] == [("1", "READY"), ("2", "READY")]

    (folder / "model.toml").write_text(toml.replace("default = true", "default = false\nversion_policy = { latest = 1 }"))
    assert client.post("/v2/repository/models/multi/load", headers=bearer(ADMIN)).status_code == 200
    gone = client.post("/classify/text", json={"text": "x", "model": "multi", "version": "1"}, headers=bearer(API))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "version_not_found"
    assert labels_of(classify(client, "multi")) == tuple(sorted(NEW))
    wait_for(lambda: [e["version"] for e in client.post("/v2/repository/index", headers=bearer(ADMIN)).json()
                      if e["name"] == "multi"] == ["2"], what="version 1 to leave the index")
    bad = client.post("/classify/text", json={"text": "x", "model": "multi", "version": "../1"}, headers=bearer(API))
    assert bad.status_code == 422


def test_grpc_repository_calls(explicit):
    import grpc

    from perceiver_serve.pb.inference import grpc_service_pb2 as repo_pb
    from perceiver_serve.pb.inference import grpc_service_pb2_grpc as repo_grpc

    root, proc, client = explicit
    copy_model(root, "remote", labels=OLD)
    with grpc_channel(proc.grpc_port) as channel:
        stub = repo_grpc.GRPCInferenceServiceStub(channel)
        admin = (("authorization", f"Bearer {ADMIN}"),)
        for metadata in ((), (("authorization", f"Bearer {API}"),)):
            for call, request in ((stub.RepositoryIndex, repo_pb.RepositoryIndexRequest()),
                                  (stub.RepositoryModelLoad, repo_pb.RepositoryModelLoadRequest(model_name="remote")),
                                  (stub.RepositoryModelUnload, repo_pb.RepositoryModelUnloadRequest(model_name="base"))):
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # KServe's proto has model_name at field 1, where Triton's (ours) has repository_name: both layouts load.
        kserve = stub.RepositoryModelLoad(repo_pb.RepositoryModelLoadRequest(repository_name="remote"), metadata=admin)
        assert kserve.model_name == "remote" and kserve.isLoaded
        loaded = stub.RepositoryModelLoad(repo_pb.RepositoryModelLoadRequest(model_name="remote"), metadata=admin)
        assert loaded.model_name == "remote" and loaded.isLoaded
        assert labels_of(classify(client, "remote")) == tuple(sorted(OLD))
        ready = stub.RepositoryIndex(repo_pb.RepositoryIndexRequest(ready=True), metadata=admin)
        assert {"base", "remote"} <= {m.name for m in ready.models} and {m.state for m in ready.models} == {"READY"}
        for name in ("../remote", ".remote", ""):
            with pytest.raises(grpc.RpcError) as bad:
                stub.RepositoryModelLoad(repo_pb.RepositoryModelLoadRequest(model_name=name), metadata=admin)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        weights = root / "remote" / "checkpoint" / "model.safetensors"
        weights.write_bytes(b"not safetensors")
        with pytest.raises(grpc.RpcError) as broken:
            stub.RepositoryModelLoad(repo_pb.RepositoryModelLoadRequest(model_name="remote"), metadata=admin)
        assert broken.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "model.safetensors" in broken.value.details()
        unloaded = stub.RepositoryModelUnload(repo_pb.RepositoryModelUnloadRequest(model_name="remote"), metadata=admin)
        assert unloaded.isUnloaded
        assert classify(client, "remote").status_code == 404


#: tritonclient.grpc's side of the test below, in a child process (its ``inference.*`` messages and
#: ours can't share one process's descriptor pool: see tests/oip/triton_calls.py).
_TRITON_REPOSITORY_CALLS = """
import json, sys
import tritonclient.grpc as g
import tritonclient.http as h
address, http_address, admin, api = sys.argv[1:]
out = {}
def attempt(name, call):
    try:
        out[name] = call()
    except g.InferenceServerException as exc:  # the same class for both clients
        out[name] = {"status": exc.status(), "message": exc.message(), "str": str(exc)}
for kind, client in (("grpc", g.InferenceServerClient(address)), ("http", h.InferenceServerClient(http_address))):
    admin_, api_ = {"authorization": "Bearer " + admin}, {"authorization": "Bearer " + api}
    attempt(kind + " load", lambda: client.load_model("triton-loaded", headers=admin_))
    attempt(kind + " ready", lambda: client.is_model_ready("triton-loaded", headers=api_))
    attempt(kind + " ready unknown", lambda: client.is_model_ready("no-such-model", headers=api_))
    attempt(kind + " load_with_config", lambda: client.load_model("triton-loaded", headers=admin_,
                                                                  config='{"max_batch_size": 4}'))
    attempt(kind + " load unknown", lambda: client.load_model("no-such-model", headers=admin_))
    attempt(kind + " unload", lambda: client.unload_model("triton-loaded", headers=admin_))
print(json.dumps(out))
"""


def test_tritonclient_loads_and_unloads(explicit):
    """tritonclient's load_model and unload_model, over gRPC (Triton's field numbers: the repository's name
    first, then the model's) and HTTP, reach the named model; Triton's config override is refused; a
    failed call's exception reads as its message (the repository routes' errors are the protocol's
    ``{"error": "<message>"}``); an unknown model is not ready, over both."""
    pytest.importorskip("tritonclient")
    root, proc, client = explicit
    copy_model(root, "triton-loaded", labels=OLD)
    done = subprocess.run([sys.executable, "-c", _TRITON_REPOSITORY_CALLS, f"127.0.0.1:{proc.grpc_port}",
                           f"127.0.0.1:{proc.http_port}", ADMIN, API], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = json.loads(done.stdout)
    for kind in ("grpc", "http"):
        assert calls[f"{kind} load"] is None and calls[f"{kind} ready"] is True, calls
        assert calls[f"{kind} unload"] is None and calls[f"{kind} ready unknown"] is False, calls
        assert "config" in calls[f"{kind} load_with_config"]["message"], calls
        assert "no-such-model" in calls[f"{kind} load unknown"]["str"], calls
    assert calls["grpc load_with_config"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert calls["http load_with_config"]["status"] == "422"
    assert classify(client, "triton-loaded").status_code == 404


def test_rest_load_refuses_overrides_and_bodies_it_cannot_read(explicit):
    """Triton's load overrides (a config, files) are refused over REST as over gRPC, not ignored; a body
    that is not JSON is refused; an empty body or empty parameters load."""
    root, _, client = explicit
    copy_model(root, "overridden", labels=OLD)
    url = "/v2/repository/models/overridden/load"
    for body in ({"parameters": {"config": '{"max_batch_size": 4}'}}, {"parameters": {"file:1/model.safetensors": "AA"}}):
        refused = client.post(url, json=body, headers=bearer(ADMIN))
        assert refused.status_code == 422 and "not supported" in refused.json()["error"], refused.text
    garbage = client.post(url, content=b"garbage", headers=bearer(ADMIN))
    assert garbage.status_code == 400 and garbage.json()["code"] == "invalid_request", garbage.text
    assert classify(client, "overridden").status_code == 404  # none of those loaded it
    assert client.post(url, json={"parameters": {}}, headers=bearer(ADMIN)).status_code == 200
    assert client.post("/v2/repository/models/overridden/unload", json={"parameters": {"unload_dependents": True}},
                       headers=bearer(ADMIN)).status_code == 200


def test_grpc_load_needs_model_control(process):
    import grpc

    from perceiver_serve.pb.inference import grpc_service_pb2 as repo_pb
    from perceiver_serve.pb.inference import grpc_service_pb2_grpc as repo_grpc

    with grpc_channel(process.grpc_port) as channel:
        stub = repo_grpc.GRPCInferenceServiceStub(channel)
        assert {m.state for m in stub.RepositoryIndex(repo_pb.RepositoryIndexRequest()).models} == {"READY"}
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(repo_pb.RepositoryModelUnloadRequest(model_name="text-sentiment"))
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def model_ready_value(client: httpx.Client, name: str, version: str = "1") -> float:
    return metric_value(client.get("/metrics").text, "perceiver_model_ready", model=name, version=version)


def model_events(client: httpx.Client, name: str, event: str, outcome: str) -> float:
    return metric_value(client.get("/metrics").text, "perceiver_model_events_total", model=name, event=event,
                        outcome=outcome)


#: model.toml contents a reload cannot use, each failing before any checkpoint is read.
_BROKEN_TOML = {
    "toml": "task = [unclosed\n",
    "task": 'task = "poetry"\nsource = "checkpoint"\n',
    "dtype": 'task = "text-classification"\nsource = "checkpoint"\ndtype = "float8"\n',
    "max_batch_size": 'task = "text-classification"\nsource = "checkpoint"\n[batching]\nmax_batch_size = -3\n',
    "unknown_key": 'task = "text-classification"\nsource = "checkpoint"\ncolour = "blue"\n',
}


def test_a_failed_reload_is_counted_once_and_the_serving_copy_stays_ready(explicit):
    """What fails (the checkpoint, or model.toml itself), one failure event; the old copy serving, ready == 1."""
    root, _, client = explicit
    folder = copy_model(root, "steady", labels=OLD)
    assert client.post("/v2/repository/models/steady/load", headers=bearer(ADMIN)).status_code == 200
    missing = (folder / "model.toml").read_text().replace('source = "checkpoint"', 'source = "missing"')
    attempts = [("missing checkpoint", missing), *_BROKEN_TOML.items()]
    for count, (what, broken) in enumerate(attempts, start=1):
        (folder / "model.toml").write_text(broken)
        failed = client.post("/v2/repository/models/steady/load", headers=bearer(ADMIN))
        assert failed.status_code == 400 and failed.json()["code"] == "load_failed", what
        assert "still serving the previous copy" in failed.json()["error"], what
        assert labels_of(classify(client, "steady")) == tuple(sorted(OLD)), what
        assert index(client, headers=bearer(ADMIN))["steady"]["state"] == "READY", what
        assert model_ready_value(client, "steady") == 1.0, what
        assert model_events(client, "steady", "reload", "failure") == count, what
    assert model_events(client, "steady", "load", "failure") == 0
    assert client.get("/health/ready").status_code == 200


def test_made_up_model_names_never_become_metric_labels(explicit):
    """Every route that names a model labels an unknown one model="": no series per made-up name."""
    import grpc

    from perceiver_serve.pb.inference import grpc_service_pb2 as oip_pb
    from perceiver_serve.pb.inference import grpc_service_pb2_grpc as oip_grpc

    _, proc, client = explicit
    api = (("authorization", f"Bearer {API}"),)
    tensors = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    with grpc_channel(proc.grpc_port) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for call in (lambda: stub.ModelInfer(oip_pb.ModelInferRequest(model_name="rand-aaa1"), metadata=api),
                     lambda: stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="rand-ddd4"), metadata=api)):
            with pytest.raises(grpc.RpcError) as unknown:
                call()
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # Readiness of a model that isn't there: not ready (Triton's answer), not an error.
        assert not stub.ModelReady(oip_pb.ModelReadyRequest(name="rand-bbb2"), metadata=api).ready
        assert not stub.ModelReady(oip_pb.ModelReadyRequest(name="base", version="9"), metadata=api).ready
        known = stub.ModelReady(oip_pb.ModelReadyRequest(name="base"), metadata=api)
        assert known.ready
    for path in ("/v2/models/rand-ccc3/infer", "/v2/models/rand-eee5/versions/1/infer"):
        assert client.post(path, json=tensors, headers=bearer(API)).status_code == 404
    assert client.get("/v2/models/rand-fff6/ready", headers=bearer(API)).status_code == 404
    metrics = client.get("/metrics").text
    assert "rand-" not in metrics
    for endpoint, status in (("ModelInfer", "NOT_FOUND"), ("ModelReady", "OK")):
        assert metric_value(metrics, "perceiver_requests_total", model="", endpoint=endpoint, protocol="oip",
                            status=status) >= 1, endpoint
    assert metric_value(metrics, "perceiver_requests_total", model="", endpoint="/v2/models/{model}/infer",
                        protocol="oip", status="404") >= 1
    assert metric_value(metrics, "perceiver_requests_total", model="base", endpoint="ModelReady", protocol="oip",
                        status="OK") >= 1


def test_grpc_control_refusals_name_the_admin_key(explicit):
    import grpc

    from perceiver_serve.pb.inference import grpc_service_pb2 as repo_pb
    from perceiver_serve.pb.inference import grpc_service_pb2_grpc as repo_grpc

    _, proc, _ = explicit
    with grpc_channel(proc.grpc_port) as channel:
        stub = repo_grpc.GRPCInferenceServiceStub(channel)
        for metadata in ((), (("authorization", f"Bearer {API}"),)):
            for call, request in ((stub.RepositoryIndex, repo_pb.RepositoryIndexRequest()),
                                  (stub.RepositoryModelLoad, repo_pb.RepositoryModelLoadRequest(model_name="base"))):
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "missing or wrong admin key" in refused.value.details(), refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:  # the inference calls still ask for the API key
            stub.ModelReady(repo_pb.ModelReadyRequest(name="base"), metadata=(("authorization", f"Bearer {ADMIN}"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing or wrong API key" in refused.value.details()


def test_poll_mode_a_new_model_that_fails_leaves_the_server_ready(tmp_path):
    """A folder published broken is reported (index, log, metrics), and the models that serve keep the
    replica in its load balancer; a broken model.toml written over a served model is counted too."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from perceiver_serve.pb.inference import grpc_service_pb2 as oip_pb
    from perceiver_serve.pb.inference import grpc_service_pb2_grpc as oip_grpc

    root = tmp_path / "repo"
    root.mkdir()
    copy_model(root, "base")
    with running("--model-control", "poll", "--repository-poll-s", "0.5", repository=root, grpc=True) as proc, \
            httpx.Client(base_url=proc.url, timeout=60) as client, grpc_channel(proc.grpc_port) as channel:
        staging = tmp_path / "staging"
        staging.mkdir()
        broken = copy_model(staging, "no-weights")
        toml = broken / "model.toml"
        toml.write_text(toml.read_text().replace('source = "checkpoint"', 'source = "missing"'))
        shutil.move(broken, root / "no-weights")
        wait_for(lambda: index(client).get("no-weights", {}).get("state") == "FAILED", what="the broken model")

        def assert_ready() -> None:
            assert client.get("/health/ready").status_code == 200, client.get("/health/ready").text
            assert client.get("/v2/health/ready").json() == {"ready": True}
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(oip_pb.ServerReadyRequest()).ready
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

        assert_ready()
        assert classify(client, "base").status_code == 200
        assert model_events(client, "no-weights", "load", "failure") == 1
        assert model_ready_value(client, "no-weights") == 0.0  # failed: what the alert is for
        assert "model 'no-weights' failed to load" in proc.logs()

        (root / "base" / "model.toml").write_text(_BROKEN_TOML["toml"])
        wait_for(lambda: "reload failed" in index(client)["base"]["reason"], what="the broken reload of base")
        assert index(client)["base"]["state"] == "READY"
        assert model_events(client, "base", "reload", "failure") == 1
        assert model_ready_value(client, "base") == 1.0
        assert_ready()
        with pytest.raises(grpc.RpcError):  # the broken model itself answers as failed
            oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip_pb.ModelInferRequest(model_name="no-weights"))


def test_an_unload_racing_a_load_is_a_conflict_not_a_failed_load(explicit):
    """A load overtaken by an unload of the same model answers 409 conflict (nothing on disk is wrong), or
    200 if it answered first, never "failed to load: None"; either call may reach the model first (an
    unload before the first load finds nothing loaded: 404); the server answers meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    root, _, client = explicit
    copy_model(root, "raced", labels=OLD)
    load_url, unload_url = "/v2/repository/models/raced/load", "/v2/repository/models/raced/unload"
    loads, unloads = [], []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(8):  # the load is overtaken in about one of four
            loading = pool.submit(client.post, load_url, headers=bearer(ADMIN))
            time.sleep(0.05)
            unloading = pool.submit(client.post, unload_url, headers=bearer(ADMIN))
            assert client.get("/health/live").status_code == 200
            loaded, unloaded = loading.result(), unloading.result()
            loads.append((loaded.status_code, loaded.json().get("code", loaded.json().get("state"))))
            unloads.append((unloaded.status_code, unloaded.json().get("code", unloaded.json().get("state"))))
    assert set(loads) <= {(200, "READY"), (409, "conflict")}, loads
    assert {status for status, _ in unloads} <= {200, 404}, unloads


def test_a_model_that_failed_to_load_does_not_take_the_tasks_default(explicit):
    """A broken copy marked default (first by name, too) leaves requests that name no model to a model
    that serves; named, it answers why it can't."""
    root, _, client = explicit
    folder = copy_model(root, "a-broken", labels=NEW)
    weights = folder / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    failed = client.post("/v2/repository/models/a-broken/load", headers=bearer(ADMIN))
    assert failed.status_code == 400 and failed.json()["code"] == "load_failed", failed.text
    unnamed = client.post("/classify/text", json={"text": "a fine day"}, headers=bearer(API))
    assert unnamed.status_code == 200 and unnamed.json()["model"] != "a-broken", unnamed.text
    named = classify(client, "a-broken")
    assert named.status_code == 503 and "failed to load" in named.json()["error"]["message"]
    assert client.post("/v2/repository/models/a-broken/unload", headers=bearer(ADMIN)).status_code == 200
