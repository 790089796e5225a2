"""Route tables: names and aliases resolve; clashes are refused."""

from __future__ import annotations

import pytest

from switchyard.edge.routing.table import Route, RouteTable


def test_names_and_aliases_resolve() -> None:
    table = RouteTable(
        [Route("a", "vllm", ("h:1",), ("alpha",)), Route("b", "tgi", ("h:2", "h:3"))]
    )
    assert table.resolve("a") is table.resolve("alpha")
    resolved = table.resolve("b")
    assert resolved is not None
    assert resolved.engine == "tgi"
    assert table.resolve("c") is None
    assert table.endpoints == {"h:1", "h:2", "h:3"}
    assert len(table) == 2


def test_a_name_used_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'x' is used by both"):
        RouteTable([Route("a", "vllm", ("h:1",), ("x",)), Route("x", "vllm", ("h:2",))])


def test_tables_compare_by_content() -> None:
    one = RouteTable([Route("a", "vllm", ("h:1",)), Route("b", "vllm", ("h:2",))])
    other = RouteTable([Route("b", "vllm", ("h:2",)), Route("a", "vllm", ("h:1",))])
    assert one == other
    assert one != RouteTable([Route("a", "vllm", ("h:9",))])
