"""The observability bundle: the OpenTelemetry collector config, the Grafana dashboard and the
alert rules parse, and every metric they query is one the services really export (read off
the `/metrics` of a running edge and adapter)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.edge import start_edge
from tests.support.processes import free_port, wait_http
from tests.support.stacks import start_stack
from tests.support.workspace import CHART

FILES = CHART / "files"
METRIC = re.compile(r"\b(switchyard_[a-z0-9_]+)\b")
#: The sample names each metric type adds to its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name the edge and an adapter can expose, from their /metrics pages."""
    log_dir = tmp_path_factory.mktemp("metrics")
    metrics_port = free_port()
    stack = start_stack("vllm", log_dir, adapter_env={"ADAPTER_METRICS_PORT": str(metrics_port)})
    try:
        edge = start_edge(log_dir, {stack.engine: [stack.address]})
        try:
            adapter_url = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_http(stack.adapter, adapter_url)
            pages = [httpx.get(edge.metrics_url).text, httpx.get(adapter_url).text]
        finally:
            edge.stop()
    finally:
        stack.stop()
    names: set[str] = set()
    for page in pages:
        for family in text_string_to_metric_families(page):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression in a dashboard or rule file (`expr` fields, and query variables)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def metric_names(node: Any) -> set[str]:
    return {m for expr in expressions(node) for m in METRIC.findall(expr)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FILES / "grafana-dashboard.json").read_text())
    return loaded


def alerts() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((FILES / "prometheus-alerts.yaml").read_text())
    return loaded


# -- the collector ------------------------------------------------------------------------


def test_collector_receives_otlp_and_exports_traces() -> None:
    config = yaml.safe_load((FILES / "otel-collector.yaml").read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    # The services export OTLP over gRPC (switchyard.servicekit.telemetry): port 4317.
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    service = config["service"]
    traces = service["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert any(e.startswith("otlp") for e in traces["exporters"]), "traces leave the collector"
    assert "memory_limiter" in traces["processors"]
    assert traces["processors"][-1] == "batch"
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{kind[:-1]} {name} is used but not defined"
    for name in service.get("extensions", []):
        assert name in config["extensions"]


# -- the dashboard ------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "model"} <= variables


def test_dashboard_covers_what_operators_watch() -> None:
    used = metric_names(dashboard())
    wanted = {
        "requests": "switchyard_edge_requests_total",
        "errors": "switchyard_edge_errors_total",
        "time to first token": "switchyard_edge_time_to_first_token_seconds_bucket",
        "inter-token latency": "switchyard_edge_inter_token_latency_seconds_bucket",
        "tokens/s": "switchyard_edge_tokens_total",
        "in flight": "switchyard_edge_in_flight_requests",
        "refusals": "switchyard_edge_refusals_total",
        "replicas per backend": "switchyard_edge_backend_ready_endpoints",
        "adapter requests": "switchyard_adapter_requests_total",
        "adapter time to first token": "switchyard_adapter_time_to_first_token_seconds_bucket",
        "adapter in flight": "switchyard_adapter_in_flight_requests",
    }
    missing = {what: name for what, name in wanted.items() if name not in used}
    assert not missing


def test_dashboard_queries_exported_metrics(exported: set[str]) -> None:
    unknown = metric_names(dashboard()) - exported
    assert not unknown, f"the dashboard queries metrics no service exports: {sorted(unknown)}"


# -- the alerts ---------------------------------------------------------------------------


def test_alert_rules_are_well_formed() -> None:
    rules = [rule for group in alerts()["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    exprs = " ".join(rule["expr"] for rule in rules)
    # Error rate, TTFT p99, a backend not ready.
    assert 'status=~"5.."' in exprs
    assert "histogram_quantile(0.99" in exprs
    assert "time_to_first_token" in exprs
    assert "switchyard_edge_backend_ready_endpoints" in exprs


def test_alerts_query_exported_metrics(exported: set[str]) -> None:
    unknown = metric_names(alerts()) - exported
    assert not unknown, f"alerts on metrics no service exports: {sorted(unknown)}"


def test_bundle_files_are_where_the_chart_reads_them() -> None:
    for name in ("otel-collector.yaml", "grafana-dashboard.json", "prometheus-alerts.yaml"):
        assert Path(FILES / name).is_file()
