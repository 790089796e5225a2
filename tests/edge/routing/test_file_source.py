"""The routes file: validated at start, reloaded on change, a bad edit keeps the old table."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from switchyard.edge.routing.file_source import FileRoutes, RoutesFileError, load_routes
from switchyard.edge.routing.table import RouteTable
from tests.support.polling import eventually

GOOD = """
models:
  - name: demo-vllm
    engine: vllm
    aliases: [llama]
    endpoints: ["127.0.0.1:50061", "127.0.0.1:50061", "adapter.ns.svc:50051"]
"""


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    table = load_routes(path)
    route = table.resolve("llama")
    assert route is not None
    assert route.name == "demo-vllm"
    assert route.endpoints == ("127.0.0.1:50061", "adapter.ns.svc:50051")  # de-duplicated


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [{name: a, engine: ollama, endpoints: ['h:1']}]", "engine"),
        ("models: [{name: a, engine: vllm, endpoints: []}]", "endpoints"),
        ("models: [{name: a, engine: vllm, endpoints: ['no-port']}]", "endpoints.0"),
        ("models: [{name: a, engine: vllm, endpoints: ['h:1'], extra: 1}]", "extra"),
        (
            "models: [{name: a, engine: vllm, endpoints: ['h:1']}, {name: a, engine: tgi, endpoints: ['h:2']}]",
            "used by both",
        ),
        ("models: [", "while parsing"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutesFileError, match=r"routes\.yaml") as caught:
        load_routes(path)
    assert fragment in str(caught.value)


async def test_reload_on_change_and_keep_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    seen: list[RouteTable] = []
    source = FileRoutes(path, seen.append)
    watcher = asyncio.create_task(source.watch(0.02))
    try:
        path.write_text(GOOD.replace("demo-vllm", "renamed"))
        os.utime(path, ns=(1, 1))  # a distinct stamp even on coarse file systems
        await eventually(lambda: len(seen) == 2, what="the changed file reloaded")
        assert [t.routes[0].name for t in seen] == ["demo-vllm", "renamed"]
        with capture_logs() as logs:
            path.write_text("models: [")
            os.utime(path, ns=(2, 2))
            # The watcher has read the bad file (it says so), and kept the old table.
            await eventually(
                lambda: any(e["event"] == "routes_reload_failed" for e in logs),
                what="the bad edit read",
            )
        assert len(seen) == 2
        assert source.table.routes[0].name == "renamed"
    finally:
        watcher.cancel()
