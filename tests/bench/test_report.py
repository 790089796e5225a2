"""The report's cache section and targets, from made-up results (no servers)."""

from __future__ import annotations

from switchyard.bench.loadgen import Sample
from switchyard.bench.procstats import RoleUsage
from switchyard.bench.report import document, markdown, targets
from switchyard.bench.runner import Result, Run
from switchyard.bench.scenarios import Scenario, default_plan, select
from switchyard.bench.stats import summarize

_PLAN = {s.name: s for s in select(default_plan(), ["cache", "embed"])}
_IDLE = RoleUsage(cpu_s=0.1, start_rss=1, peak_rss=2, end_rss=1, processes=1)
_INFO = {"cpu": "test", "logical_cores": 2, "memory_gib": 1.0, "python": "3", "commit": None}


def _result(path: str, scenario: Scenario, latency_s: float, cache: str | None) -> Result:
    samples = [Sample(0, latency_s, None, 16, 200, cache=cache) for _ in range(10)]
    return Result(path, scenario, summarize(samples, 1.0), {"edge": _IDLE}, _IDLE, 0.1, 0.0, False)


def _cache_run(hit_s: float, hit_header: str = "hit") -> Run:
    """The engine answers in 0.2 s, a miss in 0.21 s, a hit in `hit_s`."""
    cache = [s for s in _PLAN.values() if s.group == "cache"]
    results = [_result("floor", s, 0.2, None) for s in cache]
    for s in cache:
        hit = s.name.startswith("cache-hit")
        ours = (hit_s, hit_header) if hit else (0.21, "miss")
        results.append(_result("switchyard-1w", s, *ours))
    return Run(results=results, duration_s=1.0)


def _cache_checks(run: Run) -> list[dict[str, object]]:
    return [c for c in targets(run.results) if "engine_ms" in c]


def test_a_hit_five_times_faster_than_the_engine_holds() -> None:
    run = _cache_run(hit_s=0.01)
    checks = _cache_checks(run)
    assert {c["target"] for c in checks} == {
        f"a hit ≥ 5x faster than the engine's answer, {q}, {name}"
        for q in ("p50", "p99")
        for name in ("cache-hit-c16", "cache-hit-stream-c16")
    }
    assert all(c["holds"] and c["speedup"] == 20.0 and c["hits"] == "10/10" for c in checks)
    text = markdown(run, _INFO, "test")
    assert (
        "| switchyard-1w | memory | whole | 10/10 (10/10) | 10.0 / 10.0 | 210.0 / 210.0 "
        "| 200.0 / 200.0 " in text
    )
    assert "| 20.0x / 20.0x |" in text
    assert "engine 200.0 ms (20.0x; hits 10/10) | yes |" in text
    assert document(run, _INFO, "test")["targets"] == targets(run.results)


def test_a_slow_hit_or_a_miss_does_not_hold() -> None:
    slow = _cache_checks(_cache_run(hit_s=0.05))  # 4x
    assert slow
    assert not any(c["holds"] for c in slow)
    # As fast as could be, but the cache never answered: no hit was measured.
    missed = _cache_checks(_cache_run(hit_s=0.001, hit_header="miss"))
    assert missed
    assert not any(c["holds"] for c in missed)
    assert all(c["hits"] == "0/10" for c in missed)


def test_embeddings_rows_add_to_the_floor_and_litellm_skips_nothing_else() -> None:
    scenario = _PLAN["embed-x32-c16"]
    run = Run(
        results=[
            _result("floor", scenario, 0.004, None),
            _result("switchyard-1w", scenario, 0.006, None),
            _result("litellm", scenario, 0.030, None),
        ],
        duration_s=1.0,
    )
    text = markdown(run, _INFO, "test")
    assert "## Embeddings: 1 or 32 texts per request" in text
    assert "| switchyard-1w | embed-x32-c16 | 10/10 | 6.0 | 6.0 | 2.0 | 2.0 |" in text
    assert "| litellm | embed-x32-c16 | 10/10 | 30.0 | 30.0 | 26.0 | 26.0 |" in text
    assert "Response cache" not in text
