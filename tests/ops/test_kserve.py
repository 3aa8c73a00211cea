"""deploy/kserve/: the InferenceService checked structurally (KServe's CRD schema is too big to vendor).

The container must be a valid Kubernetes container, its arguments valid server flags, and
its port and probes the ones those flags open.
"""

from __future__ import annotations

import pytest
import yaml

from perceiver_serve.api.rest import OPEN_PATHS
from perceiver_serve.cli import parser
from perceiver_serve.settings import Settings

from ..support import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
from kubernetes_validate.utils import latest_version  # noqa: E402

MANIFEST = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "timeout", "containers", "serviceAccountName", "nodeSelector",
                    "tolerations", "scaleMetric", "scaleTarget", "containerConcurrency", "canaryTrafficPercent"}


@pytest.fixture(scope="module")
def service() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _container(service: dict) -> dict:
    (container,) = service["spec"]["predictor"]["containers"]
    return container


def test_it_is_a_v1beta1_inference_service_with_one_custom_container(service):
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(service) == {"apiVersion", "kind", "metadata", "spec"} and set(service["spec"]) == {"predictor"}
    assert set(service["spec"]["predictor"]) <= PREDICTOR_FIELDS
    assert _container(service)["name"] == "kserve-container"  # the name KServe gives its predictor container


def test_the_container_is_a_valid_kubernetes_container(service):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": {"containers": [_container(service)]}}
    kubernetes_validate.validate(pod, latest_version(), strict=True)


def test_arguments_port_and_probes_agree(service):
    container = _container(service)
    args = vars(parser().parse_args(container["args"]))
    args.pop("command")
    settings = Settings(**args)
    (port,) = container["ports"]
    assert port["containerPort"] == settings.http_port and port["name"] == "http1"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["port"] == settings.http_port
        assert check["path"] in OPEN_PATHS and check["path"].startswith("/v2/health/")


def test_the_image_is_the_one_the_other_manifests_run(service):
    deployment = (REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    assert f"image: {_container(service)['image']}" in deployment
