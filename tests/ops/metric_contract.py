"""The metric-name contract between the server and its operations artifacts.

The Grafana dashboard, the Prometheus rules, the Kubernetes autoscaler and the Prometheus
adapter query series by name; the server exports them (server/perceiver_serve/metrics.py).
A rename on either side breaks a panel or the autoscaler without any error, so the check is
a test: every name referenced must be exported.

Reusable on purpose: `referenced_metric_names()` reads the artifacts, `exported_metric_names`
reads any Prometheus text exposition, a synthetic one (`synthetic_exposition()`, which
touches every instrument once) or a real scrape of a running server. An end-to-end test
against a live server should send a request to each model first: a labelled instrument
exports no series before its first use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from prometheus_client.metrics import Counter, Gauge, Histogram, MetricWrapperBase, Summary
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "perceiver.json"
PROMETHEUS_CONFIG = REPO_ROOT / "docker" / "prometheus.yml"
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
HPA = K8S_DIR / "hpa.yaml"
ADAPTER_VALUES = K8S_DIR / "prometheus-adapter-values.yaml"

# Series that Prometheus writes itself for every scrape target; no server exports them.
PROMETHEUS_GENERATED = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
     "scrape_series_added"}
)

_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
     "inf", "nan", "atan2", "start", "end"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TEMPLATE_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.+),)?\s*\w+\s*\)\s*$", re.S)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana variables allowed).

    A tokenizer, not a parser: strings, label matchers, range/subquery brackets and grouping
    label lists are removed, then every identifier that is not a function call or keyword is
    a metric name. Enough for the expressions we write; the optional promtool test checks
    the syntax itself.
    """
    text = _STRING.sub('""', expr)
    text = _TEMPLATE_VARIABLE.sub("1", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        is_call = re.match(r"\s*\(", text[match.end():]) is not None
        if not is_call and name.lower() not in _PROMQL_KEYWORDS:
            names.add(name)
    return names


def grafana_variable_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (`label_values(selector, label)`)."""
    match = _LABEL_VALUES.match(query)
    if match:
        return promql_metric_names(match["selector"]) if match["selector"] else set()
    return promql_metric_names(query)


def walk_panels(panels: Iterable[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard's panels (rows included)."""
    return [t["expr"] for p in walk_panels(dashboard["panels"]) for t in p.get("targets", []) if t.get("expr")]


def dashboard_variable_queries(dashboard: dict) -> list[str]:
    queries = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def prometheus_rule_expressions(config_path: Path = PROMETHEUS_CONFIG) -> list[tuple[Path, str]]:
    """(rule file, expression) for every rule of the files the Prometheus config loads."""
    config = yaml.safe_load(config_path.read_text())
    expressions = []
    for rule_file in config.get("rule_files", []):
        path = config_path.parent / rule_file  # relative paths resolve against the config
        for group in yaml.safe_load(path.read_text())["groups"]:
            expressions += [(path, rule["expr"]) for rule in group["rules"]]
    return expressions


def adapter_rules(values_path: Path = ADAPTER_VALUES) -> list[dict]:
    return yaml.safe_load(values_path.read_text())["rules"]["custom"]


def adapter_exposed_series(values_path: Path = ADAPTER_VALUES) -> dict[str, set[str]]:
    """Custom-metrics API name -> Prometheus series it is computed from, per adapter rule."""
    exposed: dict[str, set[str]] = {}
    for rule in adapter_rules(values_path):
        for series in promql_metric_names(rule["seriesQuery"]):
            naming = rule.get("name")
            api_name = re.sub(naming["matches"], naming.get("as", ""), series) if naming else series
            exposed.setdefault(api_name, set()).add(series)
    return exposed


def hpa_pod_metric_names(hpa_path: Path = HPA) -> list[str]:
    hpa = yaml.safe_load(hpa_path.read_text())
    return [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]


def referenced_metric_names() -> dict[str, set[str]]:
    """Series name -> the artifacts that query it (Prometheus' own series left out).

    HPA metrics are resolved through the adapter rules to the series they come from; a name
    the adapter does not expose stays as it is, so the check reports it.
    """
    references: dict[str, set[str]] = {}

    def add(names: Iterable[str], source: Path) -> None:
        for name in set(names) - PROMETHEUS_GENERATED:
            references.setdefault(name, set()).add(str(source.relative_to(REPO_ROOT)))

    dashboard = json.loads(DASHBOARD.read_text())
    for expr in dashboard_expressions(dashboard):
        add(promql_metric_names(expr), DASHBOARD)
    for query in dashboard_variable_queries(dashboard):
        add(grafana_variable_metric_names(query), DASHBOARD)
    for rule_file, expr in prometheus_rule_expressions():
        add(promql_metric_names(expr), rule_file)
    for rule in adapter_rules():
        add(promql_metric_names(rule["seriesQuery"]), ADAPTER_VALUES)
    exposed = adapter_exposed_series()
    for name in hpa_pod_metric_names():
        add(exposed.get(name, {name}), HPA)
    return references


def exported_metric_names(exposition: str | bytes) -> set[str]:
    """Every series name in a Prometheus text exposition: a histogram family contributes
    `_bucket`, `_sum`, `_count`; a counter `_total` (and `_created`)."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def synthetic_exposition() -> bytes:
    """The exposition of a fresh `Metrics()` after one use of every instrument, dummy labels.

    Instruments are found by type on the object, so one added to metrics.py is covered
    without touching this test.
    """
    from perceiver_serve.metrics import Metrics

    metrics = Metrics()
    for instrument in vars(metrics).values():
        if not isinstance(instrument, MetricWrapperBase):
            continue
        child = instrument.labels(*["dummy"] * len(instrument._labelnames)) if instrument._labelnames else instrument
        if isinstance(instrument, (Histogram, Summary)):
            child.observe(1.0)
        elif isinstance(instrument, Gauge):
            child.set(1.0)
        elif isinstance(instrument, Counter):
            child.inc()
        else:  # Info, Enum: exported without use.
            continue
    return metrics.exposition()
