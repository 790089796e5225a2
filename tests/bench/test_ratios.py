"""The issue's ratios to the floor, from made-up results (no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.bench.loadgen import Sample
from switchyard.bench.procstats import RoleUsage
from switchyard.bench.ratios import cpu_us_per_token, engine_cpu_us_per_token, vs_bare, vs_floor
from switchyard.bench.report import document, markdown
from switchyard.bench.runner import Result, Run
from switchyard.bench.scenarios import Scenario, default_plan, select
from switchyard.bench.stats import summarize

_PLAN = {s.name: s for s in select(default_plan(), ["stream", "unary"])}
_INFO = {"cpu": "test", "logical_cores": 2, "memory_gib": 1.0, "python": "3", "commit": None}


def _usage(cpu_s: float) -> RoleUsage:
    return RoleUsage(cpu_s=cpu_s, start_rss=1, peak_rss=2, end_rss=1, processes=1)


def _stream(path: str, name: str, cpu_s: float, duration_s: float, gap_s: float) -> Result:
    """10 streams of 256 tokens (255 gaps each of `gap_s`), the path's CPU `cpu_s`."""
    samples = [Sample(0, 3.0, 0.05, 256, 200, gaps=(gap_s,) * 255) for _ in range(10)]
    return _result(path, _PLAN[name], samples, duration_s, cpu_s)


def _unary(path: str, name: str, cpu_s: float, latency_s: float) -> Result:
    samples = [Sample(0, latency_s, None, 16, 200) for _ in range(10)]
    return _result(path, _PLAN[name], samples, 1.0, cpu_s)


def _result(
    path: str, scenario: Scenario, samples: list[Sample], duration_s: float, cpu_s: float
) -> Result:
    if path == "floor":  # the floor's own process is the simulator
        usage, engine = {"sim": _usage(cpu_s)}, _usage(cpu_s)
    else:  # edge + adapter; the simulator behind them busy too, but not the path's
        usage, engine = {"edge": _usage(cpu_s / 2), "adapter": _usage(cpu_s / 2)}, _usage(9.0)
    summary = summarize(samples, duration_s)
    return Result(path, scenario, summary, usage, engine, 0.1, 0.0, False, (1.0,))


def _run(ours_cpu_token: float, ours_tps: float, ours_gap: float, ours_unary: float) -> Run:
    """The floor: 0.1 s of CPU per 2,560 streamed tokens in 1 s, 10 ms gaps; 10 requests
    of 1 ms at 1 ms of CPU each. Switchyard: the given multiples of those."""
    results = []
    for name in ("stream-c1", "stream-c256"):
        results.append(_stream("floor", name, 0.1, 1.0, 0.010))
        results.append(
            _stream("switchyard-1w", name, 0.1 * ours_cpu_token, 1 / ours_tps, 0.010 * ours_gap)
        )
    results.append(_unary("floor", "unary-c1", 0.01, 0.001))
    # Added latency p50 and CPU per request: both `ours_unary` times the floor's.
    results.append(_unary("switchyard-1w", "unary-c1", 0.01 * ours_unary, 0.001 * (1 + ours_unary)))
    return Run(results=results, duration_s=1.0)


def _by(checks: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(c["measure"], c["concurrency"]): c for c in checks}


def test_cpu_per_token_is_the_paths_own_not_the_simulators() -> None:
    floor = _stream("floor", "stream-c256", 0.1, 1.0, 0.01)
    ours = _stream("switchyard-1w", "stream-c256", 0.04, 1.0, 0.01)
    assert cpu_us_per_token(floor) == pytest.approx(0.1 / 2560 * 1e6)
    assert cpu_us_per_token(ours) == pytest.approx(0.04 / 2560 * 1e6)
    assert engine_cpu_us_per_token(ours) == pytest.approx(9.0 / 2560 * 1e6)


def test_a_path_within_every_bar_holds_them_all() -> None:
    run = _run(ours_cpu_token=0.4, ours_tps=0.95, ours_gap=1.05, ours_unary=1.5)
    checks = _by(vs_floor(run.results))
    assert set(checks) == {
        ("cpu_per_token", 1),
        ("tokens_per_s", 1),
        ("gap_p99", 1),
        ("cpu_per_token", 256),
        ("tokens_per_s", 256),
        ("gap_p99", 256),
        ("added_p50", 1),
        ("cpu_per_request", 1),
    }
    assert checks["cpu_per_token", 256]["ratio"] == pytest.approx(0.4)
    assert checks["cpu_per_token", 256]["floor"] == pytest.approx(39.062, abs=1e-3)
    assert checks["tokens_per_s", 256]["ratio"] == pytest.approx(0.95)
    assert checks["gap_p99", 1]["ratio"] == pytest.approx(1.05)
    assert checks["added_p50", 1]["ratio"] == pytest.approx(1.5)
    assert checks["cpu_per_request", 1]["ratio"] == pytest.approx(1.5)
    assert all(c["holds"] for c in checks.values())
    # The issue names CPU and tokens/s at 256 streams, the gap and the unary ones at 1.
    done = {k for k, c in checks.items() if c["done_when"]}
    assert done == {
        ("cpu_per_token", 256),
        ("tokens_per_s", 256),
        ("gap_p99", 1),
        ("added_p50", 1),
        ("cpu_per_request", 1),
    }
    text = markdown(run, _INFO, "test")
    assert "| switchyard-1w | 256 | **0.40x yes** | **0.95x yes** | 1.05x yes | - | - |" in text
    assert "| switchyard-1w | 1 | 0.40x yes | 0.95x yes | **1.05x yes** | **1.50x yes** |" in text
    assert document(run, _INFO, "test")["vs_floor"] == vs_floor(run.results)


def test_a_path_over_each_bar_fails_it() -> None:
    run = _run(ours_cpu_token=5.3, ours_tps=0.23, ours_gap=1.2, ours_unary=7.0)
    checks = _by(vs_floor(run.results))
    assert checks["cpu_per_token", 256]["ratio"] == pytest.approx(5.3)
    assert not any(c["holds"] for c in checks.values())
    text = markdown(run, _INFO, "test")
    assert "| switchyard-1w | 256 | **5.30x NO** | **0.23x NO** | 1.20x NO | - | - |" in text
    assert (
        "- switchyard-1w: CPU per token ÷ floor's ≤ 0.5x, stream-c256: 207 µs against "
        "the floor's 39.06 µs (the simulator behind it: 3,516 µs) = 5.30x: NO" in text
    )


def test_no_floor_no_ratio() -> None:
    run = _run(1, 1, 1, 1)
    alone = [r for r in run.results if r.path != "floor"]
    assert vs_floor(alone) == []
    assert "Against the floor" not in markdown(Run(results=alone), _INFO, "test")


def test_switchyard_against_the_bare_relay() -> None:
    """Switchyard's CPU over the bare relay's in the same run (its own work), and the
    latency it adds over the bare relay's; no section without the bare relay."""
    run = _run(ours_cpu_token=3.0, ours_tps=0.9, ours_gap=1.0, ours_unary=4.0)
    assert vs_bare(run.results) == []
    assert "Against the bare relay" not in markdown(run, _INFO, "test")
    bare = [
        _stream("bare", "stream-c256", 0.2, 1.0, 0.010),  # 2x the floor's CPU per token
        _unary("bare", "unary-c1", 0.02, 0.0025),  # 2,000 µs per request, p50 2.5 ms
    ]
    with_bare = Run(results=[*run.results, *bare], duration_s=1.0)
    rows = {r["concurrency"]: r for r in vs_bare(with_bare.results)}
    assert set(rows) == {1, 256}
    assert rows[256]["cpu_per_token_ratio"] == pytest.approx(1.5)  # 3x ÷ 2x the floor's
    assert "cpu_per_request" not in rows[256]  # no unary-c256 in this run
    assert rows[1]["cpu_per_request"] == pytest.approx(4000)
    assert rows[1]["bare_cpu_per_request"] == pytest.approx(2000)
    assert rows[1]["cpu_per_request_ratio"] == pytest.approx(2.0)
    assert rows[1]["p50_over_bare_ms"] == pytest.approx(2.5)  # 5 ms against 2.5 ms
    text = markdown(with_bare, _INFO, "test")
    assert "| switchyard-1w | 1 | - | 4,000.0 / 2,000.0 (2.00x) | +2.50 ms |" in text
    assert "| switchyard-1w | 256 | 117.2 / 78.1 (1.50x) | - | - |" in text
    assert document(with_bare, _INFO, "test")["vs_bare"] == vs_bare(with_bare.results)
