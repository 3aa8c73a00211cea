"""The Grafana dashboard and the Prometheus config: structure, and PromQL that parses.

promtool (Debian package `prometheus`) checks the config, the alert rules, and every
dashboard query with Grafana's variables filled in; without it those tests skip (and fail in CI).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.ops.metric_contract import DASHBOARD, PROMETHEUS_CONFIG, dashboard_expressions, walk_panels
from tests.ops.tools import require_tool, run_tool

# Values for Grafana's variables, so that a dashboard query is plain PromQL.
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$model": "demo"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_panels_have_unique_ids_and_fit_the_grid(dashboard):
    panels = list(walk_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_variables_are_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(dashboard["panels"])))
    assert {u for u in used if not u.startswith("__")} <= defined
    repeated = {p["repeat"] for p in walk_panels(dashboard["panels"]) if p.get("repeat")}
    assert repeated == {"model"}


def test_dashboard_covers_the_issue_panels(dashboard):
    """Per model: rate, latency quantiles, queue depth, batch size mean, rejections, ready, inflight."""
    expressions = " ".join(dashboard_expressions(dashboard))
    fragments = (
        "rate(perceiver_requests_total",
        "histogram_quantile(0.99, sum by (le) (rate(perceiver_request_duration_seconds_bucket",
        "perceiver_queue_depth",
        "rate(perceiver_batch_size_sum",
        "sum by (reason) (rate(perceiver_rejected_requests_total",
        "perceiver_model_ready",
        "perceiver_inflight_requests",
    )
    for fragment in fragments:
        assert fragment in expressions, fragment


def test_promtool_accepts_config_and_alert_rules():
    promtool = require_tool("promtool", "apt-get install prometheus")
    result = run_tool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(dashboard, tmp_path):
    promtool = require_tool("promtool", "apt-get install prometheus")
    rules = []
    for n, expr in enumerate(dashboard_expressions(dashboard)):
        for variable, value in GRAFANA_SUBSTITUTIONS.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
