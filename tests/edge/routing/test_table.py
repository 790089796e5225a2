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


T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("last_wake_s", "waking_since", "now", "expected"),
    [
        (None, None, T0, 10),  # never measured: the setting's default
        (None, T0 - 3, T0, 10),
        (14, None, T0, 14),  # measured, the operator has not scaled up yet: the whole wake
        (14, T0 - 5, T0, 9),  # 5 s into a 14 s wake
        (14, T0 - 4.5, T0, 10),  # rounded up, never early
        (14, T0 - 30, T0, 1),  # overdue: soon
        (14, T0 + 3, T0, 14),  # a clock behind the operator's: nothing has passed
        (600, T0, T0, 60),  # a long wake: capped at what the openai SDK honours
    ],
)
def test_a_waking_route_asks_for_the_rest_of_the_expected_wake(
    last_wake_s: int | None, waking_since: float | None, now: float, expected: int
) -> None:
    route = Route("a", "vllm", (), waking=True, last_wake_s=last_wake_s, waking_since=waking_since)
    assert route.wake_retry_after_s(10, now=now) == expected
