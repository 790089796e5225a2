"""The load generator, the meter and the report against a real simulator: a few requests.

Nothing here asserts speed: only that every request is sent, read and accounted for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.bench.loadgen import Sender, Target, closed_loop, open_loop, session, timed
from switchyard.bench.paths import SIMS, Deployment
from switchyard.bench.plot import plot
from switchyard.bench.procstats import Meter, Role
from switchyard.bench.report import document, machine, markdown
from switchyard.bench.runner import Progress, Run, run_scenario
from switchyard.bench.scenarios import Scenario
from switchyard.bench.stats import summarize
from switchyard.bench.wire import EncodingFormat, Workload
from tests.support.processes import Service, wait_http
from tests.support.stacks import options, start_sim

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    opts = options(ttft_s=0, itl_s=0, tools=True)  # as the bench's "zero" simulator
    service = start_sim("vllm", tmp_path_factory.mktemp("bench"), opts)
    try:
        wait_http(service, f"http://127.0.0.1:{service.port}/health")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The bench's embedding model: the vLLM simulator with its pooling runner."""
    service = start_sim("vllm", tmp_path_factory.mktemp("bench-embed"), SIMS["embed"], "-embed")
    try:
        wait_http(service, f"http://127.0.0.1:{service.port}/health")
        yield service
    finally:
        service.stop()


def _target(sim: Service, model: str = "demo-vllm") -> Target:
    return Target(f"http://127.0.0.1:{sim.port}", model)


async def test_closed_loop_unary_and_streams(sim: Service) -> None:
    async with session(4) as client:
        unary = Sender(client, _target(sim), Workload("chat", False, 16))
        samples, duration = await timed(closed_loop(unary, 4, 20))
        streams = Sender(client, _target(sim), Workload("completions", True, 8))
        streamed = await closed_loop(streams, 2, 4)
    assert len(samples) == 20
    assert all(s.ok and s.tokens == 16 and s.status == 200 for s in samples)
    summary = summarize(samples, duration)
    assert summary.ok == 20
    assert summary.latency_p50_s <= summary.latency_p99_s
    assert all(s.ok and s.tokens == 8 and s.ttft_s is not None for s in streamed)
    assert all(s.ttft_s is not None and s.ttft_s <= s.latency_s for s in streamed)


async def test_the_tools_workload_gets_tool_calls(sim: Service) -> None:
    async with session(2) as client:
        tools = Sender(client, _target(sim), Workload("chat", False, 64, tools=True))
        samples = await closed_loop(tools, 2, 6)
    assert all(s.ok and s.status == 200 and s.tokens > 0 for s in samples), samples


async def test_embeddings_answers_are_read_whole_in_either_encoding(embedder: Service) -> None:
    tokens: dict[tuple[int, str], set[int]] = {}
    encodings: tuple[EncodingFormat, ...] = ("base64", "float")
    async with session(2) as client:
        for inputs in (1, 32):
            for encoding in encodings:
                workload = Workload("embeddings", inputs=inputs, encoding_format=encoding)
                samples = await closed_loop(Sender(client, _target(embedder), workload), 2, 4)
                assert all(s.ok and s.status == 200 for s in samples), samples
                tokens[inputs, encoding] = {s.tokens for s in samples}
    # The same texts every time, whatever the encoding; 32 of them are more tokens than one.
    assert tokens[1, "base64"] == tokens[1, "float"]
    assert tokens[32, "base64"] == tokens[32, "float"]
    assert min(tokens[32, "float"]) > max(tokens[1, "float"]) > 0


async def test_open_loop_and_errors(sim: Service) -> None:
    async with session(8) as client:
        good = Sender(client, _target(sim), Workload())
        samples = await open_loop(good, 200, 10, max_outstanding=8)
        wrong = Sender(client, _target(sim, "no-such-model"), Workload(stream=True))
        refused = await closed_loop(wrong, 2, 3)
    assert len(samples) == 10
    assert all(s.ok for s in samples if s.error != "client overloaded")
    assert all(s.status == 404 and s.error and s.error.startswith("HTTP 404") for s in refused)
    assert summarize(refused, 1.0).errors == {"HTTP 404": 3}


async def test_a_scenario_is_metered_and_reported(sim: Service, tmp_path: Path) -> None:
    target = _target(sim)
    deployment = Deployment("floor", {"zero": target}, {"zero": [Role("sim", (sim.process.pid,))]})
    scenario = Scenario("unary-c4", "unary", "zero", Workload(), 4, 12, 4, cap_s=30)
    result = await run_scenario(deployment, sim.process.pid, scenario, Progress())
    assert (result.summary.ok, result.capped) == (12, False)
    assert result.usage["sim"].peak_rss > 0
    assert result.usage["sim"].cpu_s >= 0
    run = Run(results=[result], duration_s=1.0)
    info = machine()
    assert info["logical_cores"]
    text = markdown(run, info, "test")
    assert "| floor | unary-c4 | 12/12 |" in text
    doc = document(run, info, "test")
    assert doc["results"][0]["summary"]["ok"] == 12
    assert plot(run.results, tmp_path / "plot.png").stat().st_size > 0


def test_the_meter_follows_a_process_tree(sim: Service) -> None:
    meter = Meter([Role("sim", (sim.process.pid,)), Role("gone", (2**22 + 7,))])
    meter.start()
    usage = meter.stop()
    assert usage["sim"].processes == 1
    assert usage["sim"].peak_rss >= usage["sim"].end_rss > 0
    assert usage["gone"].processes == 0


@pytest.mark.slow
@pytest.mark.timeout(360)  # about 25 s on an idle machine: room for a loaded one
def test_the_command_runs_the_floor_and_switchyard_and_writes_its_files(tmp_path: Path) -> None:
    """`python -m switchyard.bench`, cut down to a few requests, without LiteLLM; the
    two-worker edge, so its redis-server starts too; the tools scenario's every answer is
    a tool call (or it counts as an error); embeddings of 32 texts; the cache scenario
    through a second edge caching in that Redis: every measured answer a hit."""
    out = tmp_path / "results"
    scenarios = ("unary-c1", "stream-c1", "tools-c16", "embed-x32-c1", "cache-hit-c16")
    command = [
        sys.executable, "-m", "switchyard.bench",
        "--paths", "floor,switchyard-2w",
        "--scenarios", ",".join(scenarios),
        "--scale", "0.01",
        "--max-noise", "inf",  # no noise reruns here (test_runner.py tests them)
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| switchyard-2w | stream-c1 |" in done.stdout
    (report,) = out.glob("*.json")
    doc = json.loads(report.read_text())
    assert {(r["path"], r["scenario"]["name"]) for r in doc["results"]} == {
        (p, s) for p in ("floor", "switchyard-2w") for s in scenarios
    }
    assert "| switchyard-2w | tools-c16 |" in done.stdout
    assert all(r["summary"]["ok"] == r["summary"]["requests"] for r in doc["results"])
    caches = {(r["path"], r["scenario"]["name"]): r["summary"]["cache"] for r in doc["results"]}
    hits = caches["switchyard-2w", "cache-hit-c16"]
    assert hits == {"hit": 16}, caches  # the warm-up stored it: nothing measured missed
    assert caches["switchyard-2w", "unary-c1"] == {}, "the plain edge has no cache"
    assert "| switchyard-2w | redis | whole | 16/16 |" in done.stdout  # no miss scenario run
    hit_checks = [t for t in doc["targets"] if "cache-hit-c16" in t["target"]]
    assert [t["hits"] for t in hit_checks] == ["16/16", "16/16"]  # p50, p99; speed unasserted
    assert all(r["added_p50_s"] is not None for r in doc["results"] if r["path"] != "floor")
    assert "without one" not in done.stdout, "the 2-worker edge shares its limits through redis"
    assert len(list(out.glob("*.png"))) == len(list(out.glob("*.md"))) == 1


def test_the_bare_relay_runs_the_unary_and_stream_scenarios(tmp_path: Path) -> None:
    """The bare relay (a do-nothing edge and adapter) answers whole requests and streams
    as the simulator does, its two processes metered as a path's; the scenarios of other
    simulators are not run on it, and the report says so."""
    out = tmp_path / "results"
    scenarios = ("unary-c1", "stream-c1", "embed-x1-c1")
    command = [
        sys.executable, "-m", "switchyard.bench",
        "--paths", "floor,bare",
        "--scenarios", ",".join(scenarios),
        "--scale", "0.01",
        "--max-noise", "inf",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = out.glob("*.json")
    doc = json.loads(report.read_text())
    bare = {r["scenario"]["name"]: r for r in doc["results"] if r["path"] == "bare"}
    assert set(bare) == {"unary-c1", "stream-c1"}
    floor = {r["scenario"]["name"]: r for r in doc["results"] if r["path"] == "floor"}
    for name, result in bare.items():
        summary = result["summary"]
        assert summary["ok"] == summary["requests"] > 0, summary
        # The same tokens as the simulator's own answers (streams: their usage chunks).
        assert summary["tokens"] / summary["ok"] == (
            floor[name]["summary"]["tokens"] / floor[name]["summary"]["ok"]
        )
        assert set(result["usage"]) == {"edge", "adapter"}
    assert "the bare relay runs the unary and stream scenarios only, not run: embed-x1-c1" in (
        done.stdout
    )
    assert "| bare | 1 |" in done.stdout  # its row against the floor
