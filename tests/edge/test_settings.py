"""The edge's settings: the metrics stay off the public port; schema limits only go down."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from switchyard.edge.settings import EdgeSettings
from switchyard.servicekit.json_schema import CONTRACT_LIMITS, SchemaLimits

ROUTES = Path("routes.yaml")


def test_the_metrics_port_is_never_the_public_one() -> None:
    with pytest.raises(ValidationError, match="EDGE_METRICS_PORT must differ from EDGE_PORT"):
        EdgeSettings(routes_file=ROUTES, port=9000, metrics_port=9000)
    assert EdgeSettings(routes_file=ROUTES, port=9000, metrics_port=0).metrics_port == 0


def test_schema_limits_default_to_the_contract_s_and_may_only_be_lowered() -> None:
    assert EdgeSettings(routes_file=ROUTES).schema_limits == CONTRACT_LIMITS
    lowered = EdgeSettings(routes_file=ROUTES, max_schema_properties=10, max_schema_depth=5)
    assert lowered.schema_limits == SchemaLimits(
        CONTRACT_LIMITS.max_bytes, CONTRACT_LIMITS.max_nodes, 5, 10
    )
    with pytest.raises(ValidationError, match="max_schema_properties"):
        EdgeSettings(routes_file=ROUTES, max_schema_properties=CONTRACT_LIMITS.max_properties + 1)


def test_docs_are_off_unless_asked_for() -> None:
    assert not EdgeSettings(routes_file=ROUTES).docs


def test_image_url_hosts_are_a_comma_separated_list_of_exact_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EdgeSettings(routes_file=ROUTES).image_url_hosts == frozenset()  # none by default
    monkeypatch.setenv("EDGE_ROUTES_FILE", str(ROUTES))
    monkeypatch.setenv("EDGE_IMAGE_URL_HOSTS", " Images.Example.com., cdn.example.org ,")
    hosts = EdgeSettings().image_url_hosts
    assert hosts == frozenset({"images.example.com", "cdn.example.org"})


def test_chat_limits_default_to_openai_like_values() -> None:
    settings = EdgeSettings(routes_file=ROUTES)
    assert (settings.max_n, settings.max_images, settings.max_image_bytes) == (8, 8, 10 << 20)
    with pytest.raises(ValidationError, match="max_n"):
        EdgeSettings(routes_file=ROUTES, max_n=129)  # beyond what the schema lets through
