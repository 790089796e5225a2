"""The multi-turn scenario: does prefix-aware routing keep each conversation on the engine
that holds its KV cache, and does it still when several edges route?

Conversations, each with its own system prompt, run `turns` turns: every turn resends the
whole history (the previous answer and a new user message appended), streamed with the
usage chunk, and a conversation's next turn starts when its last answer ended (closed
loop, `concurrency` conversations at once). Four vLLM simulators serve one model, each
with a small prefix cache (`Setup.cache_blocks`: about one replica's share of the
conversations in flight, so a replica that sees every conversation thrashes) and a
prefill cost per uncached prompt token, so that time to first token follows what the
cache holds.

Three arms, each on fresh processes (simulators, adapters, edges: no arm inherits a warm
cache): the route's policy `load` (power of two choices by requests in flight) through
one edge; `prefix` through one edge; `prefix` through two edges, each conversation's
turns sent to them in turn (they must agree without talking). Per arm: the engines'
prefix-cache hit rate (Σ hits / Σ queries, in tokens, from the simulators' own vLLM
counters before and after), TTFT p50/p99 (first content chunk), the requests each
replica served (its `vllm:request_success` count), and from the edges' request log
lines (`endpoint`, by `X-Request-Id`) how many conversations stayed on one replica.

The cache's size decides what can be shown. Load routing sends a conversation's next turn
to a given replica one time in four; that replica still holds the context if it served the
conversation within the last h rounds of turns, h being its cache over the contexts it
receives per round, i.e. over its share of those in flight. Prefix routing needs the same
cache to hold its own share of the conversations in flight (plus the ring's imbalance), so
h is about 1 when prefix routing just fits, and load routing's hit rate is then about
1 - (3/4)^h of prefix routing's: at most ~4x, ~3.3x at the h the imbalance needs. The
default sizes sit there; near that edge the hit rates move a few percent with the order
in which the turns happen to arrive (between runs, and so between one edge and two).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import yaml

from switchyard.bench.loadgen import REQUEST_TIMEOUT_S
from switchyard.bench.paths import ENGINE, HOST, _EdgeConfig, _start_edge, _write_keys
from switchyard.bench.procs import Proc, Processes, free_port, wait_ready
from switchyard.bench.scenarios import MULTITURN_TURNS, Scenario
from switchyard.bench.stats import percentile
from switchyard.devstack.components import (
    EngineOptions,
    adapter_args,
    adapter_env,
    sim_args,
)
from switchyard.devstack.supervisor import grpc_serving, http_ok
from switchyard.enginesim.vocabulary import WORDS

#: The model the four replicas serve.
MODEL: Final = "bench-multiturn"
#: The issue's bars: prefix routing's hit rate at least HIT_BAR x load routing's, its TTFT
#: p50 at least TTFT_BAR x lower, no replica above LOAD_BAR x the mean requests, and two
#: edges' hit rate within EDGES_BAR (relative) of one edge's.
HIT_BAR: Final = 3.0
TTFT_BAR: Final = 2.0
LOAD_BAR: Final = 1.3
EDGES_BAR: Final = 0.05
#: The request log line's id: arm, conversation, turn (the edges' `request_id`).
_ID_SEP: Final = "."
_CAPACITY: Final = 8192


#: The replicas' simulator: room for every request (no engine queue), a base TTFT and a
#: modest inter-token latency; contexts far below its model length.
SIM: Final = EngineOptions(max_model_len=16384, max_running=_CAPACITY, ttft_s=0.02, itl_s=0.005)


@dataclass(frozen=True, slots=True)
class Setup:
    """The replicas and the conversations' shape (the scenario gives how many, at once)."""

    replicas: int = 4
    #: Turns of every conversation (the scenario's requests are conversations x turns).
    turns: int = MULTITURN_TURNS
    #: Words (one simulator token each) of a conversation's system prompt, of each user turn.
    system_words: int = 400
    user_words: int = 200
    #: Per replica: the prefix cache's blocks (of 16 tokens). 1536 blocks hold 24.6k
    #: tokens: 32 blocks for each of the ~12 conversations in flight that prefix routing
    #: gives a replica (a quarter of 48), whose contexts grow to ~2.8k tokens. So a
    #: replica's own conversations nearly fit (their last turns thrash a little), while a
    #: replica that sees every conversation (load routing) keeps each context for only
    #: about one round of turns: near the most a cache can favour affinity (see above).
    block_size: int = 16
    cache_blocks: int = 1536
    #: Time to first token: the base, plus this per prompt token not in the cache (a
    #: 2.8k-token context uncached costs 1.4 s, a large model's prefill), so that prefill
    #: and not the processes' own overhead (~0.1 s on two shared cores) dominates.
    prefill_s_per_token: float = 0.0005
    sim: EngineOptions = SIM
    #: Edge settings of the affinity routes (None: the edge's defaults). Bounded loads'
    #: factor 2: at the edge's default (1.25) a replica with its share of 12 requests in
    #: flight passes turns on whenever a few more arrive at once, and each edge of two
    #: counts only its own half, so they spill more still (measured: 95 and 50 of 128
    #: conversations stayed on one replica, against 128 and 119 at 2).
    load_factor: float | None = 2.0
    prefix_chars: int | None = None
    #: Arms run, by (policy, edges).
    arms: tuple[tuple[str, int], ...] = (("load", 1), ("prefix", 1), ("prefix", 2))


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm's figures: every turn of every conversation, through `edges` edges."""

    policy: str
    edges: int
    #: Conversations started (all of them unless the time cap came first).
    conversations: int
    turns_ok: int
    #: Turns that failed, and those of their conversations that were then not sent.
    turns_failed: int
    errors: tuple[str, ...]  # the first few
    duration_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    #: Prompt tokens of the last turn, mean (the context reached).
    last_prompt_tokens: float
    #: Σ over the replicas of their prefix-cache counters' deltas, in tokens.
    queries: int
    hits: int
    #: Requests each replica served (its simulator's `vllm:request_success` delta).
    replica_requests: tuple[int, ...]
    #: Conversations whose logged turns all reached one replica, and those logged at all.
    sticky: int
    logged: int

    @property
    def label(self) -> str:
        return f"{self.policy}, {self.edges} edge{'s' if self.edges > 1 else ''}"

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else math.nan

    @property
    def max_load(self) -> float:
        """The busiest replica's requests over the mean."""
        total = sum(self.replica_requests)
        if not total:
            return math.nan
        return max(self.replica_requests) / (total / len(self.replica_requests))


@dataclass(frozen=True, slots=True)
class MultiTurnResult:
    scenario: Scenario
    setup: Setup
    arms: tuple[Arm, ...]

    def arm(self, policy: str, edges: int) -> Arm | None:
        return next((a for a in self.arms if a.policy == policy and a.edges == edges), None)


def conversations(s: Scenario, setup: Setup) -> int:
    """The scenario's conversations: its requests are conversations x turns."""
    return max(1, s.requests // setup.turns)


# -- the conversations --------------------------------------------------------------------------


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def system_prompt(conversation: int, setup: Setup) -> str:
    rng = random.Random(f"system {conversation}")
    return f"You are assistant {conversation}. " + _words(rng, setup.system_words)


def user_turn(conversation: int, turn: int, setup: Setup) -> str:
    rng = random.Random(f"user {conversation} {turn}")
    return f"Question {turn}: " + _words(rng, setup.user_words)


@dataclass(slots=True)
class _Turn:
    ok: bool
    ttft_s: float | None
    prompt_tokens: int | None
    answer: str
    error: str | None = None


async def _read_turn(response: aiohttp.ClientResponse, started: float) -> _Turn:
    """The streamed answer: its text, when its first content came, its usage."""
    buffer = b""
    parts: list[str] = []
    ttft: float | None = None
    prompt_tokens: int | None = None
    done = False
    error: str | None = None
    async for data in response.content.iter_any():
        buffer += data
        while (end := buffer.find(b"\n\n")) >= 0:
            event, buffer = buffer[:end], buffer[end + 2 :]
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                chunk = orjson.loads(payload)
                if "error" in chunk:
                    error = f"error event: {payload[:200].decode(errors='replace')}"
                    continue
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    prompt_tokens = usage.get("prompt_tokens")
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        ttft = time.perf_counter() - started if ttft is None else ttft
                        parts.append(text)
    if error is None and not done:
        error = "stream ended without [DONE]"
    return _Turn(error is None, ttft, prompt_tokens, "".join(parts), error)


async def _send(
    client: aiohttp.ClientSession, url: str, key: str, request_id: str, body: dict[str, Any]
) -> _Turn:
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {key}",
        "x-request-id": request_id,
    }
    started = time.perf_counter()
    try:
        async with client.post(url, data=orjson.dumps(body), headers=headers) as response:
            if response.status != 200:
                text = (await response.read())[:200].decode(errors="replace")
                return _Turn(False, None, None, "", f"HTTP {response.status}: {text}")
            return await _read_turn(response, started)
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        return _Turn(False, None, None, "", type(exc).__name__)


async def _converse(
    client: aiohttp.ClientSession,
    edges: Sequence[str],
    key: str,
    tag: str,
    conversation: int,
    turns: int,
    setup: Setup,
    max_tokens: int,
) -> list[_Turn]:
    """One conversation, turn after turn; the turns alternate between `edges`. Stops at
    the first failed turn (its history would be wrong)."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": system_prompt(conversation, setup)}
    ]
    done: list[_Turn] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": user_turn(conversation, turn, setup)})
        body = {
            "model": MODEL,
            "messages": messages,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        edge = edges[(conversation + turn) % len(edges)]
        request_id = _ID_SEP.join((tag, str(conversation), str(turn)))
        result = await _send(client, f"{edge}/v1/chat/completions", key, request_id, body)
        done.append(result)
        if not result.ok:
            break
        messages.append({"role": "assistant", "content": result.answer})
    return done


# -- the processes ------------------------------------------------------------------------------


def _metrics(text: str) -> dict[str, float]:
    """Sums of the samples of each metric on a Prometheus page (labels summed over)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


_SUCCESS: Final = "vllm:request_success_total"
_COUNTERS: Final = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", _SUCCESS)


async def _counters(client: aiohttp.ClientSession, sims: Sequence[str]) -> list[dict[str, float]]:
    """Each simulator's prefix-cache and request counters."""

    async def one(url: str) -> dict[str, float]:
        async with client.get(f"{url}/metrics") as response:
            sums = _metrics(await response.text())
        return {name: sums.get(name, 0.0) for name in _COUNTERS}

    return list(await asyncio.gather(*(one(url) for url in sims)))


async def _settled(
    client: aiohttp.ClientSession,
    sims: Sequence[str],
    before: Sequence[dict[str, float]],
    answered: int,
    within_s: float = 10.0,
) -> list[dict[str, float]]:
    """The counters once the simulators have counted every answered turn (a request is
    counted as it ends, which may be just after its last chunk reached the client)."""
    deadline = time.monotonic() + within_s
    while True:
        after = await _counters(client, sims)
        done = sum(a[_SUCCESS] - b[_SUCCESS] for a, b in zip(after, before, strict=True))
        if done >= answered or time.monotonic() > deadline:
            return after
        await asyncio.sleep(0.05)


async def _ready_endpoints(metrics_url: str) -> float:
    async with aiohttp.ClientSession() as client, client.get(metrics_url) as response:
        return _metrics(await response.text()).get("switchyard_edge_backend_ready_endpoints", 0)


async def _wait_endpoints(edge: Proc, metrics_url: str, replicas: int) -> None:
    """Until the edge's health watches see every replica SERVING: before that its ring
    would hold fewer endpoints, and the first turns would land elsewhere."""

    async def seen() -> bool:
        return await _ready_endpoints(metrics_url) >= replicas

    await wait_ready(edge, seen)


@dataclass
class _Stack:
    sims: list[str] = field(default_factory=list)  # their URLs, by replica
    endpoints: list[str] = field(default_factory=list)  # their adapters' addresses
    edges: list[str] = field(default_factory=list)
    edge_logs: list[Path] = field(default_factory=list)
    key: str = ""


async def _start(
    procs: Processes,
    state_dir: Path,
    tag: str,
    policy: str,
    n_edges: int,
    setup: Setup,
    adapter_ports: Sequence[int],
) -> _Stack:
    """Fresh simulators (empty caches), one adapter each (on `adapter_ports`), one route
    over them all, and `n_edges` edges: all started at once, then waited for (the edges
    until they see every replica serving)."""
    stack = _Stack()
    cache_flags = [
        "--block-size", str(setup.block_size),
        "--num-gpu-blocks-override", str(setup.cache_blocks),
        "--sim-prefill-per-token", str(setup.prefill_s_per_token),
    ]  # fmt: skip
    adapter_settings = {
        "ADAPTER_SERVED_MODEL_NAME": MODEL,
        "ADAPTER_LOG_LEVEL": "WARNING",
        "ADAPTER_MAX_CONNECTIONS": str(_CAPACITY),
    }
    waits: list[Coroutine[Any, Any, float]] = []
    for i, port in enumerate(adapter_ports):
        sim_port = free_port()
        url = f"http://{HOST}:{sim_port}"
        argv = [*sim_args(ENGINE, HOST, sim_port, MODEL, setup.sim), *cache_flags]
        sim = await procs.start_python(f"{tag}-sim-{i}", argv)
        waits.append(wait_ready(sim, http_ok(f"{url}/health")))
        env = adapter_env(ENGINE, url, HOST, port, extra=adapter_settings)
        adapter = await procs.start_python(f"{tag}-adapter-{i}", adapter_args(ENGINE), env)
        waits.append(wait_ready(adapter, grpc_serving(f"{HOST}:{port}")))
        stack.sims.append(url)
        stack.endpoints.append(f"{HOST}:{port}")
    route = {
        "name": MODEL,
        "engine": ENGINE,
        "endpoints": stack.endpoints,
        "routing": {"policy": policy},
    }
    routes_file = state_dir / f"{tag}-routes.yaml"
    routes_file.write_text(yaml.safe_dump({"models": [route]}, sort_keys=False))
    stack.key, keys_file = _write_keys(state_dir)
    settings = {
        # INFO: one JSON line per request, with the endpoint that served it.
        "EDGE_LOG_LEVEL": "INFO",
        "EDGE_LOG_FORMAT": "json",
        "EDGE_MAX_IN_FLIGHT": str(_CAPACITY),
        "EDGE_MAX_IN_FLIGHT_PER_MODEL": str(_CAPACITY),
        "EDGE_MAX_QUEUE": str(_CAPACITY),
    }
    if setup.load_factor is not None:
        settings["EDGE_AFFINITY_LOAD_FACTOR"] = str(setup.load_factor)
    if setup.prefix_chars is not None:
        settings["EDGE_AFFINITY_PREFIX_CHARS"] = str(setup.prefix_chars)

    async def edge(i: int) -> tuple[str, Path]:
        metrics_port = free_port()
        extra = settings | {"EDGE_METRICS_PORT": str(metrics_port)}
        config = _EdgeConfig(state_dir, keys_file, routes_file, 1, None, extra)
        proc, url = await _start_edge(procs, f"{tag}-edge-{i}", config)
        await _wait_endpoints(proc, f"http://{HOST}:{metrics_port}/metrics", setup.replicas)
        return url, proc.log_path

    async with asyncio.TaskGroup() as group:  # one failing cancels the others
        for wait in waits:
            group.create_task(wait)
        edges = [group.create_task(edge(i)) for i in range(n_edges)]
    for task in edges:
        url, log = task.result()
        stack.edges.append(url)
        stack.edge_logs.append(log)
    return stack


def _endpoints_by_conversation(logs: Sequence[Path], tag: str) -> dict[int, set[str]]:
    """From the edges' request lines (JSON), the endpoints that served each conversation."""
    served: dict[int, set[str]] = {}
    for log in logs:
        for line in log.read_bytes().splitlines():
            if not line.startswith(b"{"):
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                parts = str(record.get("request_id") or "").split(_ID_SEP)
                if len(parts) == 3 and parts[0] == tag and record.get("endpoint"):
                    served.setdefault(int(parts[1]), set()).add(record["endpoint"])
    return served


# -- one arm, then all ----------------------------------------------------------------------


async def _arm(
    s: Scenario,
    state_dir: Path,
    policy: str,
    n_edges: int,
    setup: Setup,
    adapter_ports: Sequence[int],
    say: Callable[[str], None],
) -> Arm:
    tag = f"multiturn-{policy}-{n_edges}e"
    turns = setup.turns
    n = conversations(s, setup)
    procs = Processes(state_dir)
    try:
        stack = await _start(procs, state_dir, tag, policy, n_edges, setup, adapter_ports)
        limit = aiohttp.TCPConnector(limit=s.concurrency + 8)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=limit, timeout=timeout) as client:
            # Wakes every process's code paths; a short prompt, below one block or two.
            for i, edge in enumerate(stack.edges * setup.replicas):
                warm = {"model": MODEL, "max_tokens": 2, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
                await _send(client, f"{edge}/v1/chat/completions", stack.key, f"warm-{i}", warm)
            before = await _counters(client, stack.sims)
            queue = list(range(n))
            results: dict[int, list[_Turn]] = {}
            deadline = time.perf_counter() + s.cap_s

            async def worker() -> None:
                while queue and time.perf_counter() < deadline:
                    c = queue.pop(0)
                    results[c] = await _converse(
                        client, stack.edges, stack.key, tag, c, turns, setup,
                        s.workload.max_tokens,
                    )  # fmt: skip

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(s.concurrency, n))))
            duration = time.perf_counter() - started
            after = await _settled(
                client, stack.sims, before, sum(t.ok for ts in results.values() for t in ts)
            )
    finally:
        await procs.stop_all()
    done = [t for ts in results.values() for t in ts]
    ok = [t for t in done if t.ok]
    ttfts = [t.ttft_s for t in ok if t.ttft_s is not None]
    last = [ts[-1].prompt_tokens for ts in results.values() if len(ts) == turns and ts[-1].ok]

    def delta(name: str) -> list[int]:
        return [round(a[name] - b[name]) for a, b in zip(after, before, strict=True)]

    served = _endpoints_by_conversation(stack.edge_logs, tag)
    arm = Arm(
        policy=policy,
        edges=n_edges,
        conversations=len(results),
        turns_ok=len(ok),
        turns_failed=len(results) * turns - len(ok),
        errors=tuple(t.error for t in done if t.error)[:5],
        duration_s=duration,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        last_prompt_tokens=sum(x for x in last if x) / len(last) if last else math.nan,
        queries=sum(delta("vllm:prefix_cache_queries_total")),
        hits=sum(delta("vllm:prefix_cache_hits_total")),
        replica_requests=tuple(delta(_SUCCESS)),
        sticky=sum(len(endpoints) == 1 for endpoints in served.values()),
        logged=len(served),
    )
    say(
        f"multiturn: {arm.label}: {arm.turns_ok}/{n * turns} turns ok in {duration:.1f} s, "
        f"hit rate {arm.hit_rate:.0%}, TTFT p50 {arm.ttft_p50_s * 1e3:.0f} ms, "
        f"busiest replica {arm.max_load:.2f}x the mean"
    )
    return arm


def _ports(n: int) -> list[int]:
    """`n` distinct free ports."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


async def measure_multiturn(
    s: Scenario,
    state_dir: Path,
    say: Callable[[str], None],
    setup: Setup | None = None,
) -> MultiTurnResult:
    """Each arm of `setup` on its own fresh processes, one after the other. The adapters
    listen on the same ports in every arm: the ring hashes their addresses, so every arm
    places the conversations alike (and one edge compares with two on equal terms)."""
    setup = setup or Setup()
    ports = _ports(setup.replicas)
    arms = []
    for policy, n_edges in setup.arms:
        say(f"multiturn: policy {policy} through {n_edges} edge(s): starting")
        arms.append(await _arm(s, state_dir, policy, n_edges, setup, ports, say))
    return MultiTurnResult(s, setup, tuple(arms))


# -- the report ---------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


def multiturn_checks(result: MultiTurnResult) -> list[dict[str, Any]]:
    """The issue's bars, for the arms that ran."""
    load, prefix, two = result.arm("load", 1), result.arm("prefix", 1), result.arm("prefix", 2)
    checks: list[dict[str, Any]] = []
    if load is not None and prefix is not None:
        hit = _ratio(prefix.hit_rate, load.hit_rate)
        checks.append(
            {
                "target": f"prefix-cache hit rate, prefix ≥ {HIT_BAR:g}x load",
                "figure": f"{prefix.hit_rate:.1%} vs {load.hit_rate:.1%} ({hit:.1f}x)",
                "ratio": round(hit, 2),
                "holds": bool(hit >= HIT_BAR),
            }
        )
        ttft = _ratio(load.ttft_p50_s, prefix.ttft_p50_s)
        checks.append(
            {
                "target": f"TTFT p50, prefix ≥ {TTFT_BAR:g}x lower than load",
                "figure": f"{prefix.ttft_p50_s * 1e3:.0f} ms vs {load.ttft_p50_s * 1e3:.0f} ms "
                f"({ttft:.1f}x)",
                "ratio": round(ttft, 2),
                "holds": bool(ttft >= TTFT_BAR),
            }
        )
    checks += [
        {
            "target": f"{arm.label}: no replica above {LOAD_BAR:g}x the mean requests",
            "figure": f"{arm.max_load:.2f}x ({'/'.join(map(str, arm.replica_requests))})",
            "ratio": round(arm.max_load, 3),
            "holds": bool(arm.max_load <= LOAD_BAR),
        }
        for arm in (prefix, two)
        if arm is not None
    ]
    if prefix is not None and two is not None:
        gap = abs(two.hit_rate - prefix.hit_rate) / prefix.hit_rate if prefix.hit_rate else math.nan
        checks.append(
            {
                "target": f"two edges' hit rate within {EDGES_BAR:.0%} of one edge's",
                "figure": f"{two.hit_rate:.1%} vs {prefix.hit_rate:.1%} ({gap:.1%} apart)",
                "ratio": round(gap, 4),
                "holds": bool(gap <= EDGES_BAR),
            }
        )
    return checks


def multiturn_lines(result: MultiTurnResult) -> list[str]:
    """The markdown section."""
    s, setup = result.scenario, result.setup
    n = conversations(s, setup)
    lines = [
        f"## Multi-turn conversations: prefix-aware routing vs load (power of two choices), "
        f"{setup.replicas} replicas",
        "",
        f"{n} conversations x {setup.turns} turns, {min(s.concurrency, n)} at once (closed "
        f"loop), streamed; each its own system prompt ({setup.system_words} words), each turn "
        f"a new {setup.user_words}-word user message after the whole history, answers of "
        f"{s.workload.max_tokens} tokens. {setup.replicas} vLLM simulators, each a prefix "
        f"cache of {setup.cache_blocks} blocks of {setup.block_size} tokens (LRU), TTFT "
        f"{setup.sim.ttft_s * 1e3:.0f} ms + {setup.prefill_s_per_token * 1e3:g} ms per "
        f"uncached prompt token, ITL {setup.sim.itl_s * 1e3:g} ms. Every arm on fresh "
        "processes (empty caches). Hit rate: Σ hits / Σ queries (tokens) of the simulators' "
        "vllm:prefix_cache_* counters over the arm; requests per replica: their "
        "vllm:request_success; one replica: conversations whose turns the edges' request log "
        "shows on one endpoint. Two edges: each conversation's turns alternate between them.",
        "",
        "| arm | turns ok | failed | time s | hit rate | TTFT p50 ms | TTFT p99 ms "
        "| last-turn prompt tokens | requests per replica | busiest / mean | one replica |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in result.arms:
        last = "-" if math.isnan(a.last_prompt_tokens) else f"{a.last_prompt_tokens:,.0f}"
        lines.append(
            f"| {a.label} | {a.turns_ok} | {a.turns_failed} | {a.duration_s:.1f} "
            f"| {a.hit_rate:.1%} | {a.ttft_p50_s * 1e3:.0f} | {a.ttft_p99_s * 1e3:.0f} "
            f"| {last} | {'/'.join(map(str, a.replica_requests))} | {a.max_load:.2f}x "
            f"| {a.sticky}/{a.logged} |"
        )
    lines.append("")
    lines += [
        f"- {c['target']}: {c['figure']}: {'yes' if c['holds'] else 'NO'}"
        for c in multiturn_checks(result)
    ]
    lines += [f"- {a.label}: errors, first: {a.errors[0]}" for a in result.arms if a.errors]
    lines.append("")
    return lines


def multiturn_json(result: MultiTurnResult) -> dict[str, Any]:
    return {
        "scenario": asdict(result.scenario),
        "setup": asdict(result.setup),
        "arms": [asdict(a) | {"hit_rate": a.hit_rate, "max_load": a.max_load} for a in result.arms],
        "checks": multiturn_checks(result),
    }
