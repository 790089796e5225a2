"""What the public port shows without a key: nothing of the metrics, and the API's docs only
when they are turned on. The metrics have their own port, totals over every worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.redis import RedisServer
from tests.support.stacks import Stack


@pytest.fixture(scope="module")
def docs_off(engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """An edge as the chart runs it: docs off (the default)."""
    edge = start_edge(
        tmp_path_factory.mktemp("docs-off"),
        {"vllm": [engines["vllm"].address]},
        env={"EDGE_DOCS": "false"},
    )
    try:
        yield edge
    finally:
        edge.stop()


@pytest.fixture(scope="module")
async def two_workers(
    engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    """One edge with two uvicorn workers (they share limits through Redis)."""
    log_dir = tmp_path_factory.mktemp("two-workers")
    redis = RedisServer(log_dir)
    await asyncio.to_thread(redis.start)
    try:
        edge = await asyncio.to_thread(
            start_edge,
            log_dir,
            {"vllm": [engines["vllm"].address]},
            redis_url=redis.url,
            env={"EDGE_WORKERS": "2", "EDGE_REDIS_TIMEOUT_S": "2"},
        )
        try:
            yield edge
        finally:
            await asyncio.to_thread(edge.stop)
    finally:
        await asyncio.to_thread(redis.close)


@pytest.mark.parametrize("path", ["/metrics", "/docs", "/openapi.json"])
async def test_the_public_port_answers_404_without_metrics_or_docs(
    docs_off: Edge, path: str
) -> None:
    async with httpx.AsyncClient(base_url=docs_off.url) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Not found."


async def test_the_docs_are_served_when_turned_on(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/chat/completions" in spec["paths"]
        assert (await client.get("/metrics")).status_code == 404


async def test_the_metrics_port_serves_the_metrics(docs_off: Edge) -> None:
    async with httpx.AsyncClient(base_url=docs_off.url) as client:
        assert (await client.get("/v1/models", headers=docs_off.auth())).status_code == 200
        response = await client.get(docs_off.metrics_url)
    assert response.status_code == 200
    assert "switchyard_edge_open_connections" in response.text
    assert "switchyard_edge_backend_ready_endpoints" in response.text


async def _answered(
    client: httpx.AsyncClient, body: dict[str, Any], edge: Edge
) -> httpx.Response | None:
    """The answer, or None for a 503 "not ready yet" (to retry); anything else fails."""
    response = await client.post("/v1/completions", json=body, headers=edge.auth())
    if response.status_code == 503 and "ready yet" in response.text:
        return None
    return response


async def test_with_two_workers_the_metrics_are_the_totals_of_both(two_workers: Edge) -> None:
    requests = 20
    body = {"model": "demo-vllm", "prompt": "count me", "max_tokens": 1}
    # A new connection each time, so the kernel spreads them over both workers.
    async with httpx.AsyncClient(
        base_url=two_workers.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        for _ in range(requests):
            # Each worker watches its backends itself: one may not have seen them ready yet
            # when the other already answers /readyz (a 503 asks to retry).
            response = await eventually(
                lambda: _answered(client, body, two_workers), what="a 200 from a ready worker"
            )
            assert response.status_code == 200, response.text

    async def all_counted() -> bool:
        samples = await two_workers.metrics()
        answered = sum(
            value
            for (name, labels), value in samples.items()
            if name == "switchyard_edge_requests_total" and ("status", "200") in labels
        )
        return answered == requests

    # A request is counted once answered (just after its response): wait for the last one.
    await eventually(all_counted, what=f"{requests} requests counted by the workers")
