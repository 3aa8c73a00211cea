"""Every metric the dashboard, the alert rules, the HPA and the adapter query is exported
by the server (metric_contract.py holds the reusable halves of this check)."""

from __future__ import annotations

import pytest

from tests.ops.metric_contract import (
    ADAPTER_VALUES,
    DASHBOARD,
    HPA,
    REPO_ROOT,
    exported_metric_names,
    grafana_variable_metric_names,
    promql_metric_names,
    referenced_metric_names,
    synthetic_exposition,
)


def test_every_referenced_metric_is_exported():
    exported = exported_metric_names(synthetic_exposition())
    missing = {name: sorted(sources) for name, sources in referenced_metric_names().items() if name not in exported}
    assert not missing, f"queried but not exported by perceiver_serve.metrics: {missing}"


def test_references_come_from_every_artifact():
    """Guards the test above against an extraction that finds nothing."""
    sources = set().union(*referenced_metric_names().values())
    expected = {DASHBOARD, HPA, ADAPTER_VALUES, REPO_ROOT / "docker" / "prometheus-alerts.yml"}
    assert sources == {str(p.relative_to(REPO_ROOT)) for p in expected}


def test_exported_names_are_series_names():
    exported = exported_metric_names(synthetic_exposition())
    assert {"perceiver_requests_total", "perceiver_queue_depth", "perceiver_device_memory_bytes"} <= exported
    assert {f"perceiver_request_duration_seconds_{s}" for s in ("bucket", "sum", "count")} <= exported
    assert "perceiver_requests" not in exported and "perceiver_request_duration_seconds" not in exported


@pytest.mark.parametrize(
    "expr,names",
    [
        ('histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{model="$model"}[$__rate_interval])))',
         {"a_bucket"}),
        ("sum(rate(a_sum[5m])) by (model) / on (model) group_left sum(rate(a_count[5m] offset 1h))",
         {"a_sum", "a_count"}),
        ('up{job="perceiver"} == 0 and b > bool 1e3', {"up", "b"}),
        ('sum without (pod) (c{text="sum(d) by (e)"})', {"c"}),
        ("max_over_time(f[1h:5m]) unless g", {"f", "g"}),
    ],
)
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def test_grafana_label_values_query():
    assert grafana_variable_metric_names("label_values(perceiver_model_ready, model)") == {"perceiver_model_ready"}
    assert grafana_variable_metric_names("label_values(model)") == set()


def test_device_memory_reports_allocated_and_reserved():
    from perceiver_serve.metrics import Metrics, device_memory

    assert device_memory() == {}  # no CUDA here: nothing to report, nothing invented
    metrics = Metrics()
    metrics.set_device_memory({"cuda:0": {"allocated": 3 << 30, "reserved": 5 << 30}})
    text = metrics.exposition().decode()
    assert 'perceiver_device_memory_bytes{device="cuda:0",kind="allocated"} 3.221225472e+09' in text
    assert 'perceiver_device_memory_bytes{device="cuda:0",kind="reserved"} 5.36870912e+09' in text
