"""The noisy-neighbour scenario: selectable by itself, run end to end on tiny sizes (a real
simulator, adapter and two edges), and its figures in the report. No speed is asserted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from switchyard.bench.noisy import NoisyResult, Run, measure_noisy
from switchyard.bench.report import document, markdown, noisy_checks
from switchyard.bench.runner import Run as BenchRun
from switchyard.bench.scenarios import (
    NOISY_B,
    NOISY_SHARE,
    default_plan,
    noisy_neighbour,
    request_s,
    select,
)
from switchyard.devstack.components import EngineOptions

INFO = {"cpu": "test", "logical_cores": 2, "memory_gib": 1, "python": "3", "commit": None}


def test_it_is_in_the_plan_and_selectable_alone() -> None:
    plan = default_plan()
    (by_group,) = select(plan, ["noisy"])
    assert select(plan, ["noisy-neighbour"]) == [by_group]
    assert by_group.group == "noisy"
    assert by_group not in select(plan, ["unary", "stream"])
    # B's offered load is NOISY_SHARE of the capacity: rate x duration = share x slots.
    assert by_group.rate_per_s is not None
    load = by_group.rate_per_s * request_s(NOISY_B, EngineOptions(ttft_s=0.2, itl_s=0.01))
    assert math.isclose(load, NOISY_SHARE * by_group.concurrency)
    assert by_group.scaled(0.05).requests == by_group.concurrency  # at least one round


def _run(label: str, fair: bool | None, p99: float, a_share: float) -> Run:
    return Run(
        label, fair, 10, 10, p99 / 2, p99, 5.0, 0 if fair is None else 40, 0.0, 0.0, a_share, 0.05
    )


def test_the_checks_compare_with_b_alone() -> None:
    result = NoisyResult(
        noisy_neighbour(),
        16,
        160,
        64,
        16,
        0.2,
        0.01,
        (
            _run("alone", None, 0.2, 0.0),
            _run("fair", True, 0.26, 0.9),
            _run("fifo", False, 8.0, 0.8),
        ),
    )
    assert result.ratio(True) == pytest.approx(1.3)
    assert result.ratio(False) == pytest.approx(40.0)
    checks = {(c["fair_queuing"], "busy" in c): c for c in noisy_checks(result)}
    assert checks[True, False]["holds"] is True  # 1.3x ≤ 1.5x
    assert checks[False, False]["holds"] is False
    assert checks[True, True]["busy"] == pytest.approx(0.95)
    assert checks[True, True]["holds"] is True
    assert checks[False, True]["holds"] is False  # 85% < 90%


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_scenario_runs_and_reports_its_figures(tmp_path: Path) -> None:
    quick = EngineOptions(max_running=8192, ttft_s=0.02, itl_s=0.001)
    scenario = noisy_neighbour(capacity=2, requests=4, cap_s=60, sim=quick)
    said: list[str] = []
    result = await measure_noisy(scenario, tmp_path, said.append, quick)

    assert [r.fair for r in result.runs] == [None, True, False]
    assert all(r.b_sent == r.b_ok == 4 for r in result.runs), result.runs
    assert all(not math.isnan(r.b_ttft_p99_s) for r in result.runs)
    alone, fair, fifo = result.runs
    assert alone.a_ok == 0
    assert fair.a_ok > 0
    assert fifo.a_ok > 0  # A's flood went through both edges
    assert fair.a_tokens_per_s > 0
    assert 0 < fair.a_share < fair.busy
    assert result.a_workers == 20  # 10x the capacity
    assert any("fair queuing off" in line for line in said)

    text = markdown(BenchRun(noisy=[result]), INFO, "test")
    assert "## Noisy neighbour" in text
    assert "| B + A's flood, fair queuing on | 4/4 |" in text
    assert f"{result.ratio(True):.2f}x" in text
    doc = document(BenchRun(noisy=[result]), INFO, "test")
    (noisy,) = doc["noisy"]
    assert [r["label"] for r in noisy["runs"]] == [r.label for r in result.runs]
    assert len(noisy["checks"]) == 4
    assert noisy["ratio_fair"] == result.ratio(True)
