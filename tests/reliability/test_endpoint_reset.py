"""An engine connection reset under one request: that request fails, the model stays online.

Before, one reset took the model offline: the edge marked the endpoint unreachable and
only a change on its health stream would have brought it back, while the adapter (whose
engine was fine) stayed SERVING, so every request got 503 "No backend ready" until the
adapter restarted. Now a failed call is one piece of evidence: enough of them in a row
eject an endpoint for a while, when another one can serve; when none is left, the ejected
ones are tried anyway (panic mode), and a call that succeeds brings them back.

The resets are real: a TCP proxy between adapter and engine closes the connection that
carries a generation request with an RST.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import Baseline, chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.processes import SERVING, Service, health_status, wait_serving
from tests.support.stacks import options, start_adapter, start_sim
from tests.support.tcp_proxy import TcpProxy

EJECTIONS = "switchyard_edge_endpoint_ejections_total"


@dataclass
class Adapter:
    service: Service
    proxy: TcpProxy  # between this adapter and the engine

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"


async def _adapter(sim: Service, log_dir: Path, name: str) -> Adapter:
    proxy = await TcpProxy(sim.port).__aenter__()
    service = await asyncio.to_thread(
        start_adapter, "vllm", f"http://{proxy.address}", log_dir, name
    )
    adapter = Adapter(service, proxy)
    try:
        await asyncio.to_thread(wait_serving, service, adapter.address)
    except BaseException:
        await _stop(adapter)
        raise
    return adapter


async def _stop(adapter: Adapter) -> None:
    await asyncio.to_thread(adapter.service.stop)
    await adapter.proxy.aclose()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Service]:
    service = await asyncio.to_thread(start_sim, "vllm", tmp_path, options())
    yield service
    await asyncio.to_thread(service.stop)


async def _complete(client: httpx.AsyncClient, edge: Edge) -> httpx.Response:
    return await client.post(f"{edge.url}/v1/chat/completions", json=chat(4), headers=edge.auth())


async def _metric(edge: Edge, name: str) -> float:
    return sum(v for (n, _), v in (await edge.metrics()).items() if n == name)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_one_reset_fails_one_request_and_the_model_stays_online(
    sim: Service, tmp_path: Path, stream: bool
) -> None:
    adapter = await _adapter(sim, tmp_path, "")
    edge: Edge | None = None
    try:
        edge = await asyncio.to_thread(start_edge, tmp_path, {"vllm": [adapter.address]})
        baseline = await Baseline.take(edge)
        async with httpx.AsyncClient(timeout=30) as client:
            adapter.proxy.reset_next(b"POST ")
            if stream:
                outcome = await read_stream(client, edge, chat(4))
                failed_status = outcome.status
            else:
                failed_status = (await _complete(client, edge)).status_code
            assert adapter.proxy.resets == 1, "the request's engine connection was not reset"
            assert failed_status == 503  # its only endpoint lost the engine under it

            # One event: the adapter still says SERVING, and the edge keeps routing to it.
            assert await asyncio.to_thread(health_status, adapter.address) == SERVING
            for _ in range(20):
                response = await _complete(client, edge)
                assert response.status_code == 200, response.text
            after = await read_stream(client, edge, chat(4))
            assert (after.status, after.done) == (200, True)
        assert await _metric(edge, EJECTIONS) == 0
        await baseline.settled()
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        await _stop(adapter)


async def test_repeated_failures_eject_an_endpoint_and_panic_mode_brings_it_back(
    sim: Service, tmp_path: Path
) -> None:
    # Both started at once (each start is mostly waiting); whichever started is stopped.
    started = await asyncio.gather(
        _adapter(sim, tmp_path, "-good"), _adapter(sim, tmp_path, "-bad"), return_exceptions=True
    )
    good, bad = (a if isinstance(a, Adapter) else None for a in started)
    edge: Edge | None = None
    try:
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed
        assert good is not None
        assert bad is not None
        env = {
            "EDGE_ENDPOINT_FAILURE_THRESHOLD": "2",
            "EDGE_ENDPOINT_EJECTION_S": "3600",  # no expiry within the test
            "EDGE_ENDPOINT_MAX_EJECTION_S": "3600",
        }
        endpoints = {"vllm": [good.address, bad.address]}
        edge = serving = await asyncio.to_thread(start_edge, tmp_path, endpoints, env=env)
        async with httpx.AsyncClient(timeout=30) as client:
            bad.proxy.reset_next(b"POST ", count=None)  # every generation through `bad`

            async def ejected() -> bool:
                response = await _complete(client, serving)
                # A failed attempt on `bad` is retried on `good`: the client never sees it.
                assert response.status_code == 200, response.text
                return await _metric(serving, EJECTIONS) == 1

            await eventually(ejected, what="the failing endpoint ejected")
            assert bad.proxy.resets == 2  # the threshold, in a row
            for _ in range(20):  # nothing is sent to the ejected endpoint any more
                assert (await _complete(client, edge)).status_code == 200
            assert bad.proxy.resets == 2

            # Only the ejected endpoint is left: it is tried anyway, and once a call to it
            # succeeds it is back.
            bad.proxy.reset_next(None)
            await asyncio.to_thread(good.service.stop)

            async def served() -> bool:
                return (await _complete(client, serving)).status_code == 200

            await eventually(served, what="a request served by the ejected endpoint")
            assert not good.service.alive()
            for _ in range(5):
                assert (await _complete(client, edge)).status_code == 200
        assert "endpoint_returned" in edge.service.log_tail(200)
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        for adapter in (bad, good):
            if adapter is not None:
                await _stop(adapter)
