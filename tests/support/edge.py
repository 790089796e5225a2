"""An edge process in front of real adapters, with API keys made for the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from switchyard.devstack.components import edge_args, edge_env, served_name, write_routes
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.support.polling import NotYet, eventually, eventually_sync
from tests.support.processes import (
    SERVING,
    START_TIMEOUT_S,
    Service,
    free_port,
    health_status,
    start,
    wait_http,
)


@dataclass(frozen=True)
class KeySpec:
    name: str
    models: tuple[str, ...] = ("*",)
    rpm: int | None = None
    tpm: int | None = None


DEFAULT_KEYS = (
    KeySpec("full"),
    KeySpec("vllm-only", ("demo-vllm",)),
    KeySpec("tight", rpm=3),
)


def write_keys(directory: Path, specs: Sequence[KeySpec]) -> tuple[dict[str, str], Path]:
    """Keys file for `specs`; returns the plaintext keys by name and the file."""
    keys = {spec.name: generate_key() for spec in specs}
    entries = [
        KeyEntry(
            name=s.name,
            tenant="tests",
            sha256=hash_key(keys[s.name]),
            models=list(s.models),
            rpm=s.rpm,
            tpm=s.tpm,
        )
        for s in specs
    ]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return keys, path


@dataclass
class Edge:
    service: Service
    keys: dict[str, str]
    keys_file: Path
    routes_file: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def metrics_url(self) -> str:
        """The edge's Prometheus page, on its own port (never the public one)."""
        return f"http://127.0.0.1:{self.service.extra_ports['metrics']}/metrics"

    def client(self, key: str = "full") -> AsyncOpenAI:
        """The official SDK, without its own retries (tests see every answer)."""
        return AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=self.keys.get(key, key), max_retries=0
        )

    def auth(self, key: str = "full") -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[key]}"}

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on /metrics, keyed by (name, sorted labels)."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(self.metrics_url)).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def records(self, offset: int = 0) -> list[dict[str, Any]]:
        """The edge's JSON log lines from byte `offset` of its log on, oldest first."""
        text = self.service.log_path.read_bytes()[offset:].decode(errors="replace")
        return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]

    async def record(self, request_id: str) -> dict[str, Any]:
        """The record of the request sent with `X-Request-Id: request_id`, once logged: the
        edge logs it last, after the request's rate-limit correction."""

        def logged() -> list[dict[str, Any]]:
            return [r for r in self.records() if r.get("request_id") == request_id]

        (found,) = await eventually(logged, what=f"the record of request {request_id}")
        return found

    async def in_flight(self) -> float:
        samples = await self.metrics()
        return sum(
            v for (name, _), v in samples.items() if name == "switchyard_edge_in_flight_requests"
        )

    def stop(self) -> None:
        self.service.stop()


def start_edge(
    log_dir: Path,
    endpoints: Mapping[str, Sequence[str]],
    *,
    keys: Sequence[KeySpec] = DEFAULT_KEYS,
    env: Mapping[str, str] | None = None,
    redis_url: str | None = None,
    name: str = "edge",
    keyring: tuple[dict[str, str], Path] | None = None,
) -> Edge:
    """An edge serving `endpoints`; `keyring` (from `write_keys`) shares keys between edges."""
    plain, keys_file = keyring or write_keys(log_dir, keys)
    routes_file = log_dir / f"{name}-routes.yaml"
    write_routes(routes_file, endpoints)
    # The edge cannot bind a port the OS picks for its metrics (0 turns them off), so both
    # ports are found free first; one taken meanwhile makes the edge exit at once, and
    # another pair is tried, as `make run` does.
    for attempt in range(1, START_ATTEMPTS + 1):
        port, metrics_port = free_port(), free_port()
        extra = {
            "EDGE_LOG_FORMAT": "json",
            "EDGE_RELOAD_INTERVAL_S": "0.2",
            "EDGE_SHUTDOWN_GRACE_S": "10",
            "EDGE_METRICS_PORT": str(metrics_port),
            "EDGE_DOCS": "true",
            **(env or {}),
        }
        service = start(
            name,
            edge_args(),
            log_dir,
            port=port,
            env=edge_env(
                "127.0.0.1", port, keys_file, routes_file, redis_url=redis_url, extra=extra
            ),
            extra_ports={"metrics": int(extra["EDGE_METRICS_PORT"])},
        )
        edge = Edge(service, plain, keys_file, routes_file, extra)
        try:
            wait_http(service, f"{edge.url}/readyz")
            _wait_endpoints_seen(edge, endpoints)
        except AssertionError:
            service.stop()
            if attempt < START_ATTEMPTS and _lost_a_port(service):
                continue
            raise
        except BaseException:
            service.stop()
            raise
        return edge
    raise AssertionError("not reached: the last attempt returns or raises")


def _wait_endpoints_seen(edge: Edge, endpoints: Mapping[str, Sequence[str]]) -> None:
    """Wait until the edge's health watches see as SERVING every endpoint that is SERVING
    now: /readyz says the routes are loaded, not that the watches have answered yet, and a
    request before they do is a 503 "not ready yet". Endpoints down on purpose are not
    waited for."""
    if edge.extra.get("EDGE_METRICS_PORT") == "0":
        return  # no metrics to read it from
    expected = {
        served_name(engine): sum(health_status(a, timeout=1.0) == SERVING for a in addresses)
        for engine, addresses in endpoints.items()
    }
    gauge = "switchyard_edge_backend_ready_endpoints"

    def seen() -> bool:
        if not edge.service.alive():
            raise edge.service.fail("exited while its health watches started")
        text = httpx.get(edge.metrics_url, timeout=2.0).text
        ready = {
            s.labels.get("model"): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == gauge
        }
        return all(ready.get(model, 0) >= n for model, n in expected.items())

    try:
        eventually_sync(
            seen,
            within_s=START_TIMEOUT_S,
            interval=0.05,
            what="endpoints seen",
            ignore=(httpx.HTTPError,),
        )
    except NotYet as exc:
        raise edge.service.fail(str(exc)) from None


#: Starts of an edge whose port was taken in the moment before it bound it.
START_ATTEMPTS = 3


def _lost_a_port(service: Service) -> bool:
    """Whether `service` exited because a port it was given was taken."""
    return not service.alive() and "address already in use" in service.log_tail().lower()
