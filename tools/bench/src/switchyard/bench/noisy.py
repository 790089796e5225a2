"""The noisy-neighbour scenario: does one tenant's flood delay another tenant's requests?

One model whose capacity is fixed: the edge admits `capacity` requests at once
(`EDGE_MAX_IN_FLIGHT_PER_MODEL`) and queues the rest; the simulator behind it has room
for all of them, so the edge's queue is the only one. Tenant A floods it with NOISY_FLOOD x
capacity closed-loop workers sending long non-streamed requests (of varied lengths);
tenant B sends short streamed requests in an open loop, at NOISY_SHARE of the capacity
(B's requests keep that fraction of the slots busy). B's time to first token is measured
three times: alone, with A through an edge with fair queuing on, and with A through an
edge with it off (first come, first served). Both edges stand in front of the same
adapter and simulator, and run one after the other.

The figures: B's p99 TTFT with A / alone (the issue's bar: within 1.5x with fair
queuing), and how busy the model stayed while B ran: the slot time A's and B's completed
requests took (each at the simulator's own duration for its length) over the capacity's
slot time, so 100% is a model never idle; A's part of it is A's share.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from switchyard.bench.loadgen import Sample, Sender, Target, closed_loop, open_loop, session
from switchyard.bench.paths import (
    ENGINE,
    HOST,
    Sim,
    _EdgeConfig,
    _start_adapters,
    _start_edge,
    model_name,
)
from switchyard.bench.procs import Processes, free_port, wait_ready
from switchyard.bench.scenarios import NOISY_A, NOISY_FLOOD, NOISY_SIM, Scenario, request_s
from switchyard.bench.stats import percentile
from switchyard.devstack.components import EngineOptions, sim_args, write_private
from switchyard.devstack.supervisor import http_ok
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys

#: The simulator kind (and so the model name, `bench-noisy`) of this scenario alone.
KIND = "noisy"
#: The issue's bar: B's p99 TTFT with the flood within this many times B's alone.
BAR = 1.5
#: A model this busy (of its slot time) counts as fully busy: the durations are the
#: simulator's own, a little short of the slot time a request really holds at the edge.
BUSY = 0.9
#: Waits in the FIFO run last seconds; nobody is refused for waiting in this scenario.
_QUEUE_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Run:
    """B's requests in one run, and A's completed while B ran (none when alone)."""

    label: str
    fair: bool | None  # None: B alone
    b_sent: int
    b_ok: int
    b_ttft_p50_s: float
    b_ttft_p99_s: float
    window_s: float
    a_ok: int
    a_tokens_per_s: float
    b_tokens_per_s: float
    #: Of the model's slot time while B ran: A's, B's (at the simulator's durations).
    a_share: float
    b_share: float

    @property
    def busy(self) -> float:
        return self.a_share + self.b_share


@dataclass(frozen=True, slots=True)
class NoisyResult:
    scenario: Scenario
    capacity: int
    a_workers: int
    a_tokens: int
    b_tokens: int
    ttft_s: float
    itl_s: float
    runs: tuple[Run, ...]

    def run(self, fair: bool | None) -> Run | None:
        return next((r for r in self.runs if r.fair is fair), None)

    def ratio(self, fair: bool) -> float:
        """B's p99 TTFT with the flood / alone (NaN when either is missing)."""
        alone, flooded = self.run(None), self.run(fair)
        if alone is None or flooded is None or not alone.b_ttft_p99_s > 0:
            return float("nan")
        return flooded.b_ttft_p99_s / alone.b_ttft_p99_s


def _keys(state_dir: Path) -> tuple[dict[str, str], Path]:
    """A key for each tenant (no limits: only admission decides)."""
    keys = {tenant: generate_key() for tenant in ("tenant-a", "tenant-b")}
    entries = [
        KeyEntry(name=tenant, tenant=tenant, sha256=hash_key(key), models=["*"])
        for tenant, key in keys.items()
    ]
    path = state_dir / "noisy-keys.yaml"
    write_private(path, render_keys(entries))
    return keys, path


def a_tokens(worker: int) -> int:
    """The answer length of A's `worker`: spread evenly from half to 1.5x NOISY_A's (its
    mean). Real requests differ in length; identical ones would end in lockstep and free
    the model's slots in bursts, which no real load does."""
    mean = NOISY_A.max_tokens
    return mean // 2 + (worker * 37) % (mean + 1)


async def _flood(senders: list[Sender], samples: list[Sample]) -> None:
    """A's closed loop, one worker per sender, until cancelled."""

    async def worker(sender: Sender) -> None:
        while True:
            samples.append(await sender.send())

    await asyncio.gather(*(worker(sender) for sender in senders))


def _slot_s(samples: list[Sample], sim: EngineOptions) -> float:
    """The slot time `samples` held, at the simulator's own pace for their lengths."""
    return sum(sim.ttft_s + x.tokens * sim.itl_s for x in samples)


async def _one_run(
    label: str,
    fair: bool | None,
    url: str,
    keys: dict[str, str],
    s: Scenario,
    a_workers: int,
    sim: EngineOptions,
) -> Run:
    model = model_name(KIND)
    b_target = Target(url, model, keys["tenant-b"])
    a_target = Target(url, model, keys["tenant-a"])
    a_samples: list[Sample] = []
    async with session(a_workers + 4) as a_client, session(1024) as b_client:
        b = Sender(b_client, b_target, s.workload)
        if s.warmup:
            await closed_loop(Sender(b_client, b_target, s.warmup_workload), 1, s.warmup)
        flood: asyncio.Task[None] | None = None
        if fair is not None:
            a = [
                Sender(a_client, a_target, replace(NOISY_A, max_tokens=a_tokens(i)))
                for i in range(a_workers)
            ]
            flood = asyncio.create_task(_flood(a, a_samples))
            # Time for A to fill the queue and for its requests to end at a steady pace.
            await asyncio.sleep(max(1.0, 2 * request_s(NOISY_A, sim)))
        started = time.perf_counter()
        assert s.rate_per_s is not None
        try:
            b_samples = await open_loop(
                b,
                s.rate_per_s,
                s.requests,
                max_outstanding=1024,
                deadline=started + s.cap_s,
            )
        finally:
            ended = time.perf_counter()
            if flood is not None:
                flood.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flood
    window = max(ended - started, 1e-9)
    a_done = [x for x in a_samples if x.ok and started <= x.due + x.latency_s <= ended]
    b_ok = [x for x in b_samples if x.ok]
    ttfts = [x.ttft_s for x in b_ok if x.ttft_s is not None]
    slots = s.concurrency * window
    return Run(
        label=label,
        fair=fair,
        b_sent=len(b_samples),
        b_ok=len(b_ok),
        b_ttft_p50_s=percentile(ttfts, 50),
        b_ttft_p99_s=percentile(ttfts, 99),
        window_s=window,
        a_ok=len(a_done),
        a_tokens_per_s=sum(x.tokens for x in a_done) / window,
        b_tokens_per_s=sum(x.tokens for x in b_ok) / window,
        a_share=_slot_s(a_done, sim) / slots,
        b_share=_slot_s(b_ok, sim) / slots,
    )


async def measure_noisy(
    s: Scenario, state_dir: Path, say: Callable[[str], None], sim: EngineOptions = NOISY_SIM
) -> NoisyResult:
    """Start the simulator, an adapter and the two edges; run B alone, then with A's flood
    with fair queuing on, then off; stop them all."""
    capacity = s.concurrency
    a_workers = NOISY_FLOOD * capacity
    procs = Processes(state_dir)
    try:
        port = free_port()
        proc = await procs.start_python(
            f"sim-{KIND}", sim_args(ENGINE, HOST, port, model_name(KIND), sim)
        )
        url = f"http://{HOST}:{port}"
        await wait_ready(proc, http_ok(f"{url}/health"))
        _, routes_file = await _start_adapters(procs, {KIND: Sim(KIND, proc, url)}, KIND, state_dir)
        keys, keys_file = _keys(state_dir)
        settings = {
            "EDGE_LOG_LEVEL": "WARNING",
            "EDGE_MAX_IN_FLIGHT_PER_MODEL": str(capacity),
            "EDGE_MAX_QUEUE": "8192",
            "EDGE_QUEUE_TIMEOUT_S": str(_QUEUE_TIMEOUT_S),
            "EDGE_METRICS_PORT": "0",
        }
        urls: dict[bool, str] = {}
        for on in (True, False):
            config = _EdgeConfig(
                state_dir,
                keys_file,
                routes_file,
                1,
                None,
                settings | {"EDGE_FAIR_QUEUING": "true" if on else "false"},
            )
            _, urls[on] = await _start_edge(procs, f"noisy-{'fair' if on else 'fifo'}-edge", config)
        runs = []
        plan: tuple[tuple[str, bool | None], ...] = (
            ("B alone", None),
            ("B + A's flood, fair queuing on", True),
            ("B + A's flood, fair queuing off (FIFO)", False),
        )
        for label, fair in plan:
            say(f"noisy-neighbour: {label}")
            edge_url = urls[True if fair is None else fair]
            run = await _one_run(label, fair, edge_url, keys, s, a_workers, sim)
            say(
                f"noisy-neighbour: {label}: B {run.b_ok}/{run.b_sent} ok, TTFT p99 "
                f"{run.b_ttft_p99_s * 1e3:.0f} ms; model busy {run.busy:.0%}"
            )
            runs.append(run)
    finally:
        await procs.stop_all()
    return NoisyResult(
        scenario=s,
        capacity=capacity,
        a_workers=a_workers,
        a_tokens=NOISY_A.max_tokens,
        b_tokens=s.workload.max_tokens,
        ttft_s=sim.ttft_s,
        itl_s=sim.itl_s,
        runs=tuple(runs),
    )
