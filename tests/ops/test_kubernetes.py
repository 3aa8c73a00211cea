"""deploy/kubernetes: strict schema validation (base and rendered GPU overlay), probes and
ports against the image, the HPA against the Prometheus adapter rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.ops.dockerfile import DOCKERFILES, Dockerfile
from tests.ops.metric_contract import K8S_DIR, adapter_exposed_series, adapter_rules, hpa_pod_metric_names

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
from kubernetes_validate.utils import latest_version  # noqa: E402

# The oldest Kubernetes minor still widely run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.31.0", latest_version())
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}


def _apply_json_patch(document: dict, operations: list[dict]) -> None:
    """RFC 6902 add/replace/remove, as kustomize applies a JSON 6902 patch."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) and last != "-" else last
        op = operation["op"]
        if op == "add" and isinstance(node, list):
            node.insert(len(node) if key == "-" else key, operation["value"])
        elif op == "add":
            node[key] = operation["value"]
        elif op == "replace" and (isinstance(node, list) or key in node):
            node[key] = operation["value"]
        elif op == "remove":
            del node[key]
        else:
            raise ValueError(f"cannot apply {operation}")


def render(directory: Path) -> list[dict]:
    """What `kustomize build` makes of the fields our kustomizations use (others fail loudly)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= KUSTOMIZE_FIELDS, f"renderer does not know {set(kustomization) - KUSTOMIZE_FIELDS}"
    documents = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        documents += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    documents = copy.deepcopy(documents)
    for image in kustomization.get("images", []):
        for document in documents:
            for container in document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matched = [d for d in documents if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert len(matched) == 1, f"patch target {target} matches {len(matched)} resources"
        _apply_json_patch(matched[0], yaml.safe_load((directory / patch["path"]).read_text()))
    return documents


def _by_kind(documents: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in documents}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


BASE = render(K8S_DIR)
GPU = render(K8S_DIR / "gpu")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_manifests_validate_strictly(variant, version):
    documents = {"base": BASE, "gpu": GPU}[variant]
    assert {d["kind"] for d in documents} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_unknown_fields():
    """Guards the test above against a validator that accepts everything."""
    broken = copy.deepcopy(_by_kind(BASE)["Deployment"])
    _container(broken)["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_gpu_overlay_adds_a_gpu_and_the_cuda_image():
    container = _container(_by_kind(GPU)["Deployment"])
    assert container["image"] == "perceiver-serve:cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    tolerations = _by_kind(GPU)["Deployment"]["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    base = _container(_by_kind(BASE)["Deployment"])
    assert base["image"] == "perceiver-serve:cpu" and "nvidia.com/gpu" not in base["resources"]["limits"]
    assert container["resources"]["requests"]["cpu"] == "8"
    assert {"name": "PERCEIVER_REQUIRE_GPU", "value": "true"} in container["env"]
    assert not any(e["name"] == "PERCEIVER_REQUIRE_GPU" for e in base["env"])


def test_ports_and_probes_match_the_image():
    deployment, service = _by_kind(BASE)["Deployment"], _by_kind(BASE)["Service"]
    container = _container(deployment)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    exposed = Dockerfile.read(DOCKERFILES[0]).runtime_one("EXPOSE").words()
    assert {str(p) for p in container_ports.values()} == set(exposed)
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model loading gets 10 min at least"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("8000", "/metrics")


def test_hpa_scales_the_deployment_on_an_adapter_metric():
    hpa, deployment = _by_kind(BASE)["HorizontalPodAutoscaler"], _by_kind(BASE)["Deployment"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "replicas belong to the HPA"
    names = hpa_pod_metric_names()
    assert names and set(names) <= set(adapter_exposed_series())


def test_adapter_rules_sum_each_pods_series():
    """Helm values of prometheus-adapter: every rule maps namespace/pod labels to resources
    and aggregates per pod (over the models), which a Pods metric of the HPA needs."""
    values = yaml.safe_load((K8S_DIR / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["default"] is False
    assert values["prometheus"]["url"].startswith("http") and isinstance(values["prometheus"]["port"], int)
    for rule in adapter_rules():
        assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
        assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
        assert set(rule["name"]) == {"matches", "as"}
        query = rule["metricsQuery"]
        assert query.startswith("sum by (<<.GroupBy>>)") and "<<.Series>>{<<.LabelMatchers>>}" in query


@pytest.mark.parametrize("directory", [K8S_DIR, K8S_DIR / "gpu"], ids=["base", "gpu"])
def test_kustomization_files_exist(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    paths = kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]
    for path in paths:
        assert (directory / path).exists(), path
