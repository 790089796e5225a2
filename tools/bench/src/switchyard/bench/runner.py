"""One bench run: every path, one after the other, through the same scenarios.

The simulators the scenarios need start first and serve every path; then the floor is
measured, then each path is started, measured and stopped, so that only the path under
test (and the simulators) run during its scenarios. A path without a target for a
scenario (LiteLLM has no response cache here) skips it and says so. LiteLLM's virtualenv
is made before anything is measured; if LiteLLM cannot be installed or started, the run
goes on without it and says why. The noisy-neighbour scenario (`noisy`) is not a path's:
it runs once, after the paths, with its own simulator, adapter and edges.

Noise: a scenario during which the other processes of the machine used more than
`max_noise_pct` of one core is run once more on that path, and the quieter run kept
(`measured`); the result keeps the noise of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from switchyard.bench import litellm
from switchyard.bench.loadgen import Sender, closed_loop, open_loop, session, timed
from switchyard.bench.multiturn import MultiTurnResult, measure_multiturn
from switchyard.bench.noisy import NoisyResult, measure_noisy
from switchyard.bench.paths import (
    Deployment,
    Sim,
    bare,
    floor,
    litellm_proxy,
    start_sims,
    switchyard,
    workers,
)
from switchyard.bench.procs import Processes
from switchyard.bench.procstats import Meter, Role, RoleUsage, machine_busy_s, own_cpu_s
from switchyard.bench.scenarios import Scenario
from switchyard.bench.stats import Summary, summarize

PATHS = ("floor", "switchyard-1w", "switchyard-2w", "litellm", "bare")
#: Above this share of one core used by other processes during a scenario (%), the
#: scenario is run once more on that path (`--max-noise`).
MAX_NOISE_PCT = 15.0


@dataclass(frozen=True, slots=True)
class Result:
    path: str
    scenario: Scenario
    summary: Summary
    usage: dict[str, RoleUsage]  # the path's own processes, by role
    engine: RoleUsage  # the simulator serving the scenario
    client_cpu_s: float
    #: CPU the rest of the machine used meanwhile (other processes: noise, if large).
    others_cpu_s: float
    capped: bool  # the time cap stopped it before all its requests were sent
    #: The noise (`noise_pct`) of each run of this scenario on this path: two when the
    #: first was too noisy and it was run again (this result is the quieter one).
    noise_pcts: tuple[float, ...] = ()

    @property
    def rerun(self) -> bool:
        return len(self.noise_pcts) > 1


@dataclass
class PathStatus:
    name: str
    measured: bool = False
    startup_s: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    paths: list[PathStatus] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0
    litellm_version: str | None = None
    #: The machine's load average (1, 5, 15 min) when the run began: others' work.
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noisy: list[NoisyResult] = field(default_factory=list)
    multiturn: list[MultiTurnResult] = field(default_factory=list)
    #: The noise above which a scenario was run again (% of one core).
    max_noise_pct: float = MAX_NOISE_PCT


class Progress:
    """Progress lines on stderr: at most one every `every_s` within a scenario."""

    def __init__(self, every_s: float = 3.0) -> None:
        self._t0 = time.monotonic()
        self._every = every_s
        self._last = 0.0

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self._t0)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", file=sys.stderr, flush=True)

    def counter(self, label: str, total: int) -> Callable[[int], None]:
        def tick(done: int) -> None:
            now = time.monotonic()
            if now - self._last >= self._every and done < total:
                self._last = now
                self.say(f"  {label}: {done}/{total}")

        return tick


async def run_scenario(
    deployment: Deployment, engine_pid: int, scenario: Scenario, progress: Progress
) -> Result:
    """Warm up, then run `scenario` against `deployment`, metering its processes and the
    engine's (`engine_pid`)."""
    target = deployment.targets[scenario.target]
    label = f"{deployment.name} {scenario.name}"
    async with session(scenario.concurrency) as client:
        if scenario.warmup:
            warm = Sender(client, target, scenario.warmup_workload)
            await closed_loop(warm, min(scenario.concurrency, scenario.warmup), scenario.warmup)
        sender = Sender(client, target, scenario.workload)
        meter = Meter([*deployment.roles[scenario.target], Role("engine", (engine_pid,))])
        await asyncio.to_thread(meter.start)
        client_cpu, busy = own_cpu_s(), machine_busy_s()
        deadline = time.perf_counter() + scenario.cap_s
        tick = progress.counter(label, scenario.requests)
        if scenario.rate_per_s is not None:
            run = open_loop(
                sender,
                scenario.rate_per_s,
                scenario.requests,
                max_outstanding=scenario.concurrency,
                deadline=deadline,
                progress=tick,
            )
        else:
            run = closed_loop(
                sender, scenario.concurrency, scenario.requests, deadline=deadline, progress=tick
            )
        samples, duration = await timed(run)
        client_cpu = own_cpu_s() - client_cpu
        busy = machine_busy_s() - busy
        usage = await asyncio.to_thread(meter.stop)
    engine = usage.pop("engine")
    ours = client_cpu + sum(u.cpu_s for u in usage.values())
    if not any(engine_pid in role.pids for role in deployment.roles[scenario.target]):
        ours += engine.cpu_s  # the floor's own process is the engine: count it once
    summary = summarize(samples, duration)
    result = Result(
        path=deployment.name,
        scenario=scenario,
        summary=summary,
        usage=usage,
        engine=engine,
        client_cpu_s=client_cpu,
        others_cpu_s=max(busy - ours, 0.0),
        capped=len(samples) < scenario.requests,
    )
    progress.say(
        f"{label}: {summary.ok}/{summary.requests} ok, p50 {summary.latency_p50_s * 1e3:.1f} ms, "
        f"p99 {summary.latency_p99_s * 1e3:.1f} ms, {summary.requests_per_s:.0f} req/s, "
        f"others {noise_pct(result):.0f}% of a core"
        + (" (time cap reached)" if result.capped else "")
    )
    return result


def noise_pct(result: Result) -> float:
    """What the machine's other processes used during `result`, in % of one core."""
    duration = result.summary.duration_s
    return result.others_cpu_s / duration * 100 if duration > 0 else math.nan


async def measured(
    measure: Callable[[], Awaitable[Result]], max_noise_pct: float, say: Callable[[str], None]
) -> Result:
    """`measure()` once; once more if its noise was above `max_noise_pct`, keeping the
    quieter of the two. Never more than twice: a machine that stays noisy is reported so."""
    first = await measure()
    noise = noise_pct(first)
    if not noise > max_noise_pct:  # NaN (no duration): nothing to compare
        return replace(first, noise_pcts=(noise,))
    say(
        f"{first.path} {first.scenario.name}: others used {noise:.0f}% of a core "
        f"(> {max_noise_pct:g}%): running it once more"
    )
    second = await measure()
    again = noise_pct(second)
    kept = second if again < noise else first
    return replace(kept, noise_pcts=(noise, again))


async def _measure(
    deployment: Deployment,
    sims: dict[str, Sim],
    plan: Sequence[Scenario],
    run: Run,
    progress: Progress,
) -> list[str]:
    """Runs the plan's scenarios this path serves; returns the names of the others."""
    skipped = []
    for scenario in plan:
        if scenario.target not in deployment.targets:
            skipped.append(scenario.name)
            continue
        engine_pid = sims[scenario.sim].proc.pid

        def measure(scenario: Scenario = scenario, pid: int = engine_pid) -> Awaitable[Result]:
            return run_scenario(deployment, pid, scenario, progress)

        run.results.append(await measured(measure, run.max_noise_pct, progress.say))
    return skipped


@contextlib.asynccontextmanager
async def _deployment(
    name: str, sims: dict[str, Sim], state_dir: Path, venv: Path, cache: bool
) -> AsyncIterator[Deployment]:
    if name == "floor":
        yield floor(sims)
    elif name.startswith("switchyard-"):
        async with switchyard(sims, state_dir, workers(name), cache=cache) as deployment:
            yield deployment
    elif name == "litellm":
        async with litellm_proxy(sims, state_dir, venv) as deployment:
            yield deployment
    elif name == "bare":
        async with bare(sims, state_dir) as deployment:
            yield deployment
    else:
        raise ValueError(f"unknown path {name!r}")


async def bench(
    paths: Sequence[str],
    plan: Sequence[Scenario],
    state_dir: Path,
    venv: Path,
    litellm_version: str,
    progress: Progress,
    max_noise_pct: float = MAX_NOISE_PCT,
) -> Run:
    run = Run(load_before=os.getloadavg(), max_noise_pct=max_noise_pct)
    t0 = time.monotonic()
    try:
        on_paths = [s for s in plan if s.group not in ("noisy", "multiturn")]
        if on_paths:
            await _paths(run, paths, on_paths, state_dir, venv, litellm_version, progress)
        for scenario in plan:
            if scenario.group == "noisy":
                run.noisy.append(await measure_noisy(scenario, state_dir, progress.say))
            if scenario.group == "multiturn":
                run.multiturn.append(await measure_multiturn(scenario, state_dir, progress.say))
    finally:
        run.duration_s = time.monotonic() - t0
    return run


async def _paths(
    run: Run,
    paths: Sequence[str],
    plan: Sequence[Scenario],
    state_dir: Path,
    venv: Path,
    litellm_version: str,
    progress: Progress,
) -> None:
    """Every path through the plan's scenarios (`run.results`, `run.paths`)."""
    statuses = {name: PathStatus(name) for name in paths}
    run.paths = list(statuses.values())
    wanted = list(paths)
    if "litellm" in wanted:
        progress.say(f"LiteLLM {litellm_version}: checking {venv} (installs once, ~1 min)")
        try:
            await litellm.ensure_venv(venv, litellm_version, state_dir / "litellm-install.log")
            run.litellm_version = litellm_version
        except RuntimeError as exc:
            statuses["litellm"].notes.append(f"not measured: {exc}")
            wanted.remove("litellm")
            progress.say(f"LiteLLM will not be measured: {exc}")
    sim_procs = Processes(state_dir)
    try:
        progress.say("starting the engine simulators")
        sims = await start_sims(sim_procs, {s.sim for s in plan})
        cache = any(s.cached for s in plan)
        for name in wanted:
            status = statuses[name]
            progress.say(f"{name}: starting")
            try:
                async with _deployment(name, sims, state_dir, venv, cache) as deployment:
                    status.startup_s = deployment.startup_s
                    status.notes += deployment.notes
                    progress.say(f"{name}: ready in {deployment.startup_s:.1f} s")
                    skipped = await _measure(deployment, sims, plan, run, progress)
                    if skipped:
                        names = ", ".join(skipped)
                        status.notes.append(f"{deployment.unserved}, not run: {names}")
                    status.measured = True
            except RuntimeError as exc:
                if name != "litellm":
                    raise
                status.notes.append(f"not measured: {exc}".splitlines()[0])
                progress.say(f"LiteLLM failed, going on without it: {exc}")
    finally:
        await sim_procs.stop_all()
