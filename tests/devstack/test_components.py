"""How `make run` learns the ports its processes bound: from the line each one logs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import structlog

from switchyard.devstack.components import ADAPTER_LISTENING, SIM_LISTENING

STARTED: dict[str, Any] = {
    "address": "127.0.0.1:41234",
    "engine": "vllm",
    "engine_url": "http://127.0.0.1:8000",  # a port too, but not the adapter's
    "event": "adapter_started",
    "service": "adapter-vllm",
}


@pytest.mark.parametrize(
    "render",
    [
        structlog.processors.JSONRenderer(serializer=orjson.dumps),  # a pipe: `auto` is JSON
        structlog.dev.ConsoleRenderer(colors=False),  # ADAPTER_LOG_FORMAT=console
    ],
    ids=["json", "console"],
)
def test_the_adapter_s_port_is_read_from_its_started_line(render: Any) -> None:
    def line(event: str) -> str:
        rendered = render(None, "info", {**STARTED, "event": event})
        return rendered.decode() if isinstance(rendered, bytes) else str(rendered)

    found = ADAPTER_LISTENING.search(line("adapter_started"))
    assert found is not None, line("adapter_started")
    assert found.group(1) == "41234"
    assert ADAPTER_LISTENING.search(line("adapter_stopping")) is None


def test_a_simulator_s_port_is_read_from_its_listening_line() -> None:
    for line in (
        "2026-12-02 02:24:15,973 INFO switchyard.enginesim enginesim-vllm listening on http://127.0.0.1:39061",
        "2026-12-02 02:24:15,973 INFO switchyard.enginesim tgi-sim switchyard/sim-1b-instruct listening on http://127.0.0.1:39061",
    ):
        found = SIM_LISTENING.search(line)
        assert found is not None, line
        assert found.group(1) == "39061"
    assert SIM_LISTENING.search("loading: not listening for 3.0 s") is None
