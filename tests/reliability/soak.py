"""A soak: a user's day of traffic shapes against the local stack, and what it left behind.

    python -m tests.reliability.soak     # `make soak`: 10 minutes at production intervals
    python -m tests.reliability.soak --minutes 1 --keepalive-s 1     # shorter, faster pings

The stack: Redis (the shared rate limits), a vLLM simulator behind two adapters (demo-vllm,
fast) and an SGLang simulator behind one (demo-sglang, slow: after its first token it is
silent for a whole idle gap). Each cycle is a burst, then steady mixed traffic (unary and
streaming, chat and completions), then an idle gap of five keepalive intervals during which
only slow calls (one stream, one unary) are open, silent; a last burst follows the last gap. The edge pings its adapters
every `keepalive_s` (EDGE_ADAPTER_KEEPALIVE_S, 10 s in production), and each adapter
accepts pings every half of that (ADAPTER_KEEPALIVE_MIN_PING_INTERVAL_S, 5 s).

Counted: answers by status (a stream that ends with an error event counts as that error),
GOAWAYs "too_many_pings" (gRPC logs each one it receives, at ERROR level, in the edge's
log), health watches the edge lost (its metric), and the edge's RSS and open descriptors
after warm-up and at the end. `tests/reliability/test_soak.py` runs it with short
intervals; a healthy run has only 200s, no GOAWAY and no lost watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.helpers import Baseline, edge_process, read_stream
from tests.support.edge import Edge, KeySpec, start_edge
from tests.support.processes import Service, wait_serving
from tests.support.redis import running_redis
from tests.support.stacks import options, start_adapter, start_stack

PRODUCTION_KEEPALIVE_S = 10.0
KEYS = (KeySpec("soak", rpm=1_000_000, tpm=1_000_000_000),)
WATCH_LOSSES = "switchyard_edge_endpoint_watch_losses_total"
GOAWAY = "too_many_pings"


@dataclass(frozen=True)
class Plan:
    """How long, and how often the edge pings its adapters."""

    keepalive_s: float = PRODUCTION_KEEPALIVE_S
    duration_s: float = 600.0
    #: At least this many cycles, however short the duration.
    min_cycles: int = 1
    burst: int = 40
    concurrency: int = 4

    @property
    def gap_s(self) -> float:
        """An idle gap, and the slow calls' silence: several keepalive intervals."""
        return 5 * self.keepalive_s

    @property
    def steady_s(self) -> float:
        return 2 * self.keepalive_s


@dataclass
class Usage:
    rss_mib: float
    fds: int


@dataclass
class Report:
    statuses: Counter[str] = field(default_factory=Counter)
    goaways: int = 0
    watch_losses: float = 0.0
    cycles: int = 0
    before: Usage | None = None
    after: Usage | None = None
    #: Why the edge was not back to its baseline at the end (requests in flight, fds).
    unsettled: str | None = None
    log_dir: Path | None = None

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def render(self) -> str:
        lines = [
            f"soak: {self.cycles} cycles, {sum(self.statuses.values())} requests",
            "  by status: "
            + ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items())),
            f"  GOAWAY too_many_pings: {self.goaways}",
            f"  health watches lost: {self.watch_losses:g}",
        ]
        for name, usage in (("before", self.before), ("after", self.after)):
            if usage is not None:
                lines.append(f"  edge {name}: RSS {usage.rss_mib:.1f} MiB, {usage.fds} open fds")
        if self.unsettled is not None:
            lines.append(f"  NOT SETTLED: {self.unsettled}")
        if self.log_dir is not None:
            lines.append(f"  logs: {self.log_dir}")
        return "\n".join(lines)


@dataclass
class _Stack:
    edge: Edge
    services: list[Service]


def _rss_mib(edge: Edge) -> float:
    return float(edge_process(edge).memory_info().rss / 2**20)


@contextlib.asynccontextmanager
async def _stack(plan: Plan, log_dir: Path) -> AsyncIterator[_Stack]:
    adapter_env: dict[str, str] = {}
    edge_env: dict[str, str] = {"EDGE_LOG_LEVEL": "WARNING"}
    if plan.keepalive_s != PRODUCTION_KEEPALIVE_S:  # otherwise: the services' own defaults
        adapter_env["ADAPTER_KEEPALIVE_MIN_PING_INTERVAL_S"] = str(plan.keepalive_s / 2)
        edge_env["EDGE_ADAPTER_KEEPALIVE_S"] = str(plan.keepalive_s)
    services: list[Service] = []
    with running_redis(log_dir) as redis:
        try:
            # Each process returns once it has said which port it bound; the adapters are
            # SERVING once their engines are up, waited for together.
            fast = start_stack("vllm", log_dir, wait=False, adapter_env=adapter_env)
            slow_opts = options(ttft_s=0.01, itl_s=plan.gap_s)
            slow = start_stack("sglang", log_dir, slow_opts, wait=False, adapter_env=adapter_env)
            second = start_adapter("vllm", fast.sim_url, log_dir, "-2", **adapter_env)
            services += [fast.adapter, second, slow.adapter, fast.sim, slow.sim]
            second_address = f"127.0.0.1:{second.port}"
            await asyncio.gather(
                *(
                    asyncio.to_thread(wait_serving, adapter, address)
                    for adapter, address in (
                        (fast.adapter, fast.address),
                        (second, second_address),
                        (slow.adapter, slow.address),
                    )
                )
            )
            endpoints = {"vllm": [fast.address, second_address], "sglang": [slow.address]}
            edge = await asyncio.to_thread(
                start_edge, log_dir, endpoints, keys=KEYS, env=edge_env, redis_url=redis.url
            )
            services.insert(0, edge.service)
            yield _Stack(edge, services)
        finally:
            await asyncio.gather(*(asyncio.to_thread(service.stop) for service in services))


def _body(model: str, max_tokens: int, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "ignore_eos": True}
    if chat:
        body["messages"] = [{"role": "user", "content": "soak"}]
    else:
        body["prompt"] = "soak"
    return body


class _Load:
    def __init__(self, client: httpx.AsyncClient, edge: Edge, report: Report) -> None:
        self._client = client
        self._edge = edge
        self._report = report
        self._random = random.Random(7)

    async def unary(self, model: str, max_tokens: int, chat: bool) -> None:
        path = "/v1/chat/completions" if chat else "/v1/completions"
        try:
            response = await self._client.post(
                f"{self._edge.url}{path}",
                json=_body(model, max_tokens, chat),
                headers=self._edge.auth("soak"),
            )
        except httpx.HTTPError as exc:
            self._report.statuses[f"client error {type(exc).__name__}"] += 1
            return
        self._report.statuses[str(response.status_code)] += 1

    async def stream(self, model: str, max_tokens: int) -> None:
        try:
            outcome = await read_stream(
                self._client, self._edge, _body(model, max_tokens, chat=True), key="soak"
            )
        except httpx.HTTPError as exc:
            self._report.statuses[f"client error {type(exc).__name__}"] += 1
            return
        if outcome.status == 200 and (outcome.error is not None or not outcome.done):
            code = outcome.error["code"] if outcome.error else "unfinished"
            self._report.statuses[f"200 then stream error {code}"] += 1
        else:
            self._report.statuses[str(outcome.status)] += 1

    async def one(self) -> None:
        kind = self._random.choice(("chat", "completion", "stream"))
        if kind == "stream":
            await self.stream("demo-vllm", 16)
        else:
            await self.unary("demo-vllm", 8, chat=kind == "chat")

    async def burst(self, size: int) -> None:
        await asyncio.gather(*(self.one() for _ in range(size)))

    async def steady(self, seconds: float, concurrency: int) -> None:
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:
                await self.one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def silent(self) -> None:
        """The idle gap: only two slow calls, each silent for the whole gap."""
        await asyncio.gather(self.stream("demo-sglang", 2), self.unary("demo-sglang", 2, chat=True))


async def _watch_losses(edge: Edge) -> float:
    samples = await edge.metrics()
    return sum(v for (name, _), v in samples.items() if name == WATCH_LOSSES)


async def soak(plan: Plan, log_dir: Path) -> Report:
    report = Report(log_dir=log_dir)
    async with _stack(plan, log_dir) as stack:
        edge = stack.edge
        limits = httpx.Limits(max_connections=plan.burst + plan.concurrency + 2)
        async with httpx.AsyncClient(timeout=plan.gap_s * 4 + 60, limits=limits) as client:
            load = _Load(client, edge, report)
            await load.burst(plan.concurrency)  # warm-up: channels and pools open
            report.statuses.clear()
            baseline = await Baseline.take(edge, key="soak")
            report.before = Usage(await asyncio.to_thread(_rss_mib, edge), baseline.fds)
            end = time.monotonic() + plan.duration_s
            while report.cycles < plan.min_cycles or time.monotonic() < end:
                await load.burst(plan.burst)
                await load.steady(plan.steady_s, plan.concurrency)
                await load.silent()
                report.cycles += 1
            # Traffic after the last idle gap too: connections the pings kept must still serve.
            await load.burst(plan.burst)
        try:
            await baseline.settled()
        except AssertionError as exc:
            report.unsettled = str(exc)
        fds = await asyncio.to_thread(edge_process(edge).num_fds)
        report.after = Usage(await asyncio.to_thread(_rss_mib, edge), fds)
        report.watch_losses = await _watch_losses(edge)
        report.goaways = sum(
            service.log_path.read_text(errors="replace").count(GOAWAY) for service in stack.services
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default: 10)")
    parser.add_argument(
        "--keepalive-s",
        type=float,
        default=PRODUCTION_KEEPALIVE_S,
        help="the edge's keepalive interval; idle gaps are five of it (default: 10, production)",
    )
    args = parser.parse_args()
    plan = Plan(keepalive_s=args.keepalive_s, duration_s=args.minutes * 60)
    log_dir = Path(tempfile.mkdtemp(prefix="switchyard-soak-"))
    print(
        f"soak: {args.minutes:g} min, keepalive every {plan.keepalive_s:g} s, "
        f"idle gaps of {plan.gap_s:g} s; logs in {log_dir}",
        flush=True,
    )
    report = asyncio.run(soak(plan, log_dir))
    print(report.render())
    if report.failures or report.goaways or report.watch_losses or report.unsettled:
        raise SystemExit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
