"""What the bench runs on every path: the issue's scenarios, sized to fit ten minutes.

- `unary-c{1,16,64,256}`: non-streaming chat completions of 16 tokens from the simulator
  without latency: what remains is the path's own overhead.
- `open-50rps`: non-streaming requests arriving at 50 per second whatever happens (an
  open loop), on the simulator without latency.
- `stream-c{1,16,64,256}`: streamed chat completions of 256 tokens at a realistic pace
  (50 ms to the first token, then 10 ms per token).
- `memory-1000`: 1,000 streams open at once, each long-lived and mostly idle (10 tokens,
  one every 500 ms).
- `noisy-neighbour`: tenant A floods one model of fixed capacity (the edge queues) at 10x
  that capacity while tenant B sends short streams at 10% of it; B's time to first token
  alone, then with A through an edge with fair queuing on, then off (`noisy.py`). Run once,
  with its own simulator, adapter and edges, whatever the paths.
- `multiturn`: 128 conversations x 8 turns with growing context over 4 simulated replicas
  with small prefix caches: the route's policy `load`, then `prefix` through one edge and
  through two (`multiturn.py`). Run once, on its own processes, whatever the paths.
- `tools-c16`: non-streaming chat completions offering one function tool with
  `tool_choice: required` (every answer is a tool call), on the simulator without latency:
  the cost of carrying tools (the schema, cached as valid after its first check, and the
  call's translation) on top of `unary-c16`.

Every scenario has a fixed number of requests (the same on every path), after a warm-up
at the same concurrency that is not measured, and a time cap: no request starts after it,
so that a path slower than expected cannot overrun the budget (the table says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from switchyard.bench.wire import Workload
from switchyard.devstack.components import EngineOptions

Group = Literal[
    "unary", "stream", "open", "memory", "tools", "embed", "cache", "noisy", "multiturn"
]
GROUPS: tuple[Group, ...] = (
    "unary",
    "stream",
    "open",
    "memory",
    "tools",
    "embed",
    "cache",
    "noisy",
    "multiturn",
)
CONCURRENCY = (1, 16, 64, 256)
UNARY = Workload(api="chat", stream=False, max_tokens=16)
STREAM = Workload(api="chat", stream=True, max_tokens=256)
LONG_LIVED = Workload(api="chat", stream=True, max_tokens=10)
TOOLS = Workload(api="chat", stream=False, max_tokens=64, tools=True)
#: Texts per embeddings request, and the concurrencies they run at.
EMBED_INPUTS = (1, 32)
EMBED_CONCURRENCY = (1, 16)
#: The response cache's request: greedy, so its answer is determined and cacheable.
CACHED = Workload(api="chat", stream=False, max_tokens=16, temperature=0.0)
CACHED_STREAM = Workload(api="chat", stream=True, max_tokens=64, temperature=0.0)
#: The concurrency at which the issue wants a hit 5x faster than the engine's answer.
CACHE_CONCURRENCY = 16
#: The noisy neighbour (`noisy.py`): one model of fixed capacity (requests at once); tenant
#: A floods it with long non-streamed requests from NOISY_FLOOD x capacity closed-loop
#: workers, tenant B sends short streams in an open loop at NOISY_SHARE of the capacity.
#: 32 at once, as an engine batching a few dozen sequences: with fair queuing B waits for
#: the next slot to free (admission does not preempt), about A's request time / capacity.
NOISY_CAPACITY = 32
NOISY_FLOOD = 10
NOISY_SHARE = 0.1
NOISY_A = Workload(api="chat", stream=False, max_tokens=64)
NOISY_B = Workload(api="chat", stream=True, max_tokens=16)
#: Its simulator (kind "noisy", started by the scenario itself): a prefill of 200 ms, then
#: 10 ms per token; room for every request (the edge's admission is the only queue).
NOISY_SIM = EngineOptions(max_running=8192, ttft_s=0.2, itl_s=0.01)
#: The multi-turn scenario (`multiturn.py`, run once on its own replicas and edges): its
#: requests are conversations x MULTITURN_TURNS, its concurrency the conversations at once,
#: its cap the time after which no conversation starts (per arm).
MULTITURN_TURNS = 8
MULTITURN = Workload(api="chat", stream=True, max_tokens=100)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    group: Group
    sim: str  # which simulator (`paths.SIMS`)
    workload: Workload
    concurrency: int  # closed loop: workers; open loop: the most requests open at once
    requests: int
    warmup: int
    cap_s: float
    rate_per_s: float | None = None  # open loop

    @property
    def cached(self) -> bool:
        """Served, on the Switchyard paths, by an edge whose response cache is on."""
        return self.group == "cache"

    @property
    def target(self) -> str:
        """Which of a path's targets serves it (`paths.Deployment.targets`)."""
        return cache_target(self.sim) if self.cached else self.sim

    @property
    def warmup_workload(self) -> Workload:
        """Warm-ups only open the connections and wake the code paths: short answers (but
        a whole tool call: one cut short is no call; and the very request a cache scenario
        sends: the warm-up of `hit` stores its answer)."""
        if self.workload.tools or self.cached:
            return self.workload
        return replace(self.workload, max_tokens=min(self.workload.max_tokens, 4))

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with `factor` times the requests (at least one round)."""
        requests = max(math.ceil(self.requests * factor), min(self.concurrency, self.requests))
        return replace(self, requests=requests, warmup=min(self.warmup, requests))


def cache_target(sim: str) -> str:
    return f"{sim}+cache"


def request_s(workload: Workload, sim: EngineOptions) -> float:
    """How long the simulator takes for one request of `workload`: the slot time it holds."""
    return sim.ttft_s + workload.max_tokens * sim.itl_s


def noisy_neighbour(
    capacity: int = NOISY_CAPACITY,
    requests: int = 100,
    cap_s: float = 40.0,
    sim: EngineOptions = NOISY_SIM,
) -> Scenario:
    """The noisy-neighbour scenario: `concurrency` is the model's capacity, `requests` and
    `rate_per_s` B's (per run: alone, then with A's flood twice), `workload` B's."""
    return Scenario(
        "noisy-neighbour",
        "noisy",
        "noisy",
        NOISY_B,
        capacity,
        requests,
        warmup=5,
        cap_s=cap_s,
        rate_per_s=NOISY_SHARE * capacity / request_s(NOISY_B, sim),
    )


def multi_turn(
    conversations: int = 128, at_once: int = 48, cap_s: float = 60.0, turns: int = MULTITURN_TURNS
) -> Scenario:
    """The multi-turn scenario: `conversations` of `turns` turns, `at_once` at a time
    (`cap_s`: no conversation starts later, in each arm)."""
    requests = conversations * turns
    return Scenario("multiturn", "multiturn", "multiturn", MULTITURN, at_once, requests, 0, cap_s)


_UNARY_REQUESTS = {1: 300, 16: 800, 64: 1280, 256: 2048}
_STREAM_REQUESTS = {1: 4, 16: 48, 64: 128, 256: 256}
#: By (inputs, concurrency).
_EMBED_REQUESTS = {(1, 1): 300, (1, 16): 800, (32, 1): 100, (32, 16): 400}


def _embeddings() -> list[Scenario]:
    return [
        Scenario(
            f"embed-x{inputs}-c{c}",
            "embed",
            "embed",
            Workload(api="embeddings", inputs=inputs),
            c,
            _EMBED_REQUESTS[inputs, c],
            max(2 * c, 20),
            cap_s=40,
        )
        for inputs in EMBED_INPUTS
        for c in EMBED_CONCURRENCY
    ]


def _cache() -> list[Scenario]:
    c = CACHE_CONCURRENCY
    # A miss takes the engine's time (~0.2 s whole, ~0.7 s streamed): few of them; hits are
    # quick.
    return [
        Scenario(f"cache-miss-c{c}", "cache", "stream", replace(CACHED, distinct=True), c, 240, c, 40),
        Scenario(f"cache-hit-c{c}", "cache", "stream", CACHED, c, 800, 3 * c, cap_s=40),
        Scenario(
            f"cache-miss-stream-c{c}", "cache", "stream", replace(CACHED_STREAM, distinct=True),
            c, 96, c, cap_s=40,
        ),
        Scenario(f"cache-hit-stream-c{c}", "cache", "stream", CACHED_STREAM, c, 400, 3 * c, 40),
    ]  # fmt: skip


def default_plan() -> list[Scenario]:
    plan = [
        Scenario(f"unary-c{c}", "unary", "zero", UNARY, c, n, max(2 * c, 50), cap_s=40)
        for c, n in _UNARY_REQUESTS.items()
    ]
    plan.append(Scenario("open-50rps", "open", "zero", UNARY, 1024, 300, 50, 20, rate_per_s=50))
    plan += [
        Scenario(f"stream-c{c}", "stream", "stream", STREAM, c, n, c, cap_s=60)
        for c, n in _STREAM_REQUESTS.items()
    ]
    plan.append(Scenario("memory-1000", "memory", "idle", LONG_LIVED, 1000, 1000, 50, cap_s=60))
    plan.append(Scenario("tools-c16", "tools", "zero", TOOLS, 16, 800, 50, cap_s=40))
    return [*plan, *_embeddings(), *_cache(), noisy_neighbour(), multi_turn()]


def select(plan: list[Scenario], names: list[str] | None) -> list[Scenario]:
    """The scenarios named (by name or group), in plan order; all when `names` is None."""
    if not names:
        return plan
    chosen = [s for s in plan if s.name in names or s.group in names]
    unknown = set(names) - {s.name for s in plan} - {s.group for s in plan}
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return chosen
