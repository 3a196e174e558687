"""knative/observability: the dashboard and rules load, parse as PromQL, and use only the pinned metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import metrics

promql = pytest.importorskip("promql_parser")

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "knative" / "observability"
HISTOGRAMS = {"flashsale_http_request_duration_seconds", "flashsale_password_hash_seconds"}
# Every series name a query may select: the pinned names and a histogram's parts.
SERIES = set(metrics.PINNED_NAMES) | {f"{h}_{part}" for h in HISTOGRAMS for part in ("bucket", "count", "sum")}
GO_DURATION = re.compile(r"^(\d+(ms|s|m|h))+$")
# Grafana fills these in before Prometheus sees the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$sku": ".*"}


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL expression selects; raises ValueError if it does not parse."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: list[str | None] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            names.append(node.name)

    promql.walk(promql.parse(expr), visit)
    assert None not in names, f"select metrics by name, not by matchers alone: {expr}"
    return [name for name in names if name is not None]


def off_the_pin(expr: str) -> set[str]:
    names = metric_names(expr)
    assert names, f"no flashsale metric in {expr!r}"
    return set(names) - SERIES


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FOLDER / "dashboard.json").read_text())
    return loaded


def rule_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((FOLDER / "prometheusrule.yaml").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"])
            assert found, variable
            queries.append(found.group(1))
    return queries


def test_the_checker_catches_a_misspelt_name_and_a_broken_query() -> None:
    assert off_the_pin('sum(rate(flashsale_order_total{outcome="confirmed"}[5m]))') == {"flashsale_order_total"}
    assert off_the_pin("histogram_quantile(0.99, rate(flashsale_http_request_duration_seconds_bucket[$__rate_interval]))") == set()
    with pytest.raises(ValueError):
        metric_names("sum(rate(flashsale_orders_total[5m])")


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert {"uid", "title", "panels", "schemaVersion", "templating", "time"} <= set(board)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert {"type", "title", "gridPos", "targets", "datasource"} <= set(panel), panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "sku"}


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    titles = " | ".join(panel["title"] for panel in dashboard()["panels"]).lower()
    for wanted in ("sold vs stock", "orders per second by outcome", "p50 / p95 / p99 by function", "by source", "dependency errors"):
        assert wanted in titles, wanted


@pytest.mark.parametrize("expr", dashboard_queries())
def test_every_dashboard_query_uses_only_pinned_names(expr: str) -> None:
    assert off_the_pin(expr) == set()


def test_every_pinned_metric_is_on_the_dashboard() -> None:
    used = {name for expr in dashboard_queries() for name in metric_names(expr)}
    shown = {name.removesuffix("_bucket") for name in used}
    assert shown >= metrics.PINNED_NAMES, metrics.PINNED_NAMES - shown


def test_the_rules_are_a_prometheus_rule_with_the_alerts_asked_for() -> None:
    rule = rule_file()
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts = {}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for entry in group["rules"]:
            assert set(entry) <= {"alert", "expr", "for", "labels", "annotations"}, entry
            assert entry["labels"]["severity"] in {"critical", "warning"} and entry["annotations"]["summary"]
            assert "for" not in entry or GO_DURATION.match(entry["for"]), entry["for"]
            alerts[entry["alert"]] = entry["expr"]
    assert {"FlashsaleOversold", "FlashsaleErrorRatioHigh", "FlashsaleOrderP99AboveTarget"} <= set(alerts)
    assert "flashsale_sale_units" in alerts["FlashsaleOversold"] and 'outcome="confirmed"' in alerts["FlashsaleOversold"]
    for name, expr in alerts.items():
        assert off_the_pin(expr) == set(), name


def test_routes_in_the_rules_are_routes_the_functions_serve() -> None:
    sources = "".join(p.read_text() for p in (REPO / "functions").rglob("main.py"))
    for route in set(re.findall(r'route="([^"]+)"', (FOLDER / "prometheusrule.yaml").read_text())):
        assert f'"{route}"' in sources, route


def test_the_pod_monitor_scrapes_every_function_with_metrics() -> None:
    (monitor,) = yaml.safe_load_all((FOLDER / "podmonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "user-port" and endpoint["path"] == "/metrics"  # Knative's name for the container port
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert selector["key"] == "serving.knative.dev/service" and selector["operator"] == "In"
    services = {}
    for path in (REPO / "knative").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Service" and doc.get("apiVersion") == "serving.knative.dev/v1":
                services[path.stem] = doc["metadata"]["name"]
    with_metrics = {services[f] for f in ("auth", "stock", "order", "events")}
    assert set(selector["values"]) == with_metrics


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_monitoring_objects_and_the_dashboard_config_map() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(FOLDER)], capture_output=True, text=True, check=False, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in yaml.safe_load_all(rendered.stdout) if o}
    assert set(objects) == {"ConfigMap/flashsale-dashboard", "PodMonitor/flashsale", "PrometheusRule/flashsale"}
    config_map = objects["ConfigMap/flashsale-dashboard"]
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(config_map["data"]["flashsale.json"]) == dashboard()
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(config_map, kubernetes_validate.latest_version(), strict=True)
