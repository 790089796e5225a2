"""The noise rerun decision (`runner.measured`) and how the report shows it, from made-up
noise readings (no servers, no timing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from switchyard.bench.loadgen import Sample
from switchyard.bench.procstats import RoleUsage
from switchyard.bench.report import document, markdown
from switchyard.bench.runner import Result, Run, measured, noise_pct
from switchyard.bench.scenarios import default_plan, select
from switchyard.bench.stats import summarize

_SCENARIO = select(default_plan(), ["unary-c1"])[0]
_IDLE = RoleUsage(cpu_s=0.1, start_rss=1, peak_rss=2, end_rss=1, processes=1)
_INFO = {"cpu": "test", "logical_cores": 2, "memory_gib": 1.0, "python": "3", "commit": None}


def _result(noise_pct: float, latency_s: float = 0.002) -> Result:
    """A 2-second run during which other processes used `noise_pct` % of one core."""
    summary = summarize([Sample(0, latency_s, None, 16, 200)] * 10, 2.0)
    others = noise_pct / 100 * 2.0
    return Result("switchyard-1w", _SCENARIO, summary, {"edge": _IDLE}, _IDLE, 0.1, others, False)


def _measures(*noises: float) -> tuple[Callable[[], Awaitable[Result]], list[Result]]:
    """A `measure` giving runs of these noises in turn, and the runs it gave."""
    queue = [_result(n, latency_s=0.001 * (i + 1)) for i, n in enumerate(noises)]
    given: list[Result] = []

    async def measure() -> Result:
        given.append(queue[len(given)])
        return given[-1]

    return measure, given


async def test_a_quiet_run_is_kept_as_it_is() -> None:
    measure, given = _measures(10.0, 1.0)
    said: list[str] = []
    kept = await measured(measure, 15.0, said.append)
    assert len(given) == 1
    assert kept.noise_pcts == pytest.approx((10.0,))
    assert not kept.rerun
    assert said == []


async def test_a_noisy_run_is_run_again_and_the_quieter_kept() -> None:
    measure, given = _measures(40.0, 5.0)
    said: list[str] = []
    kept = await measured(measure, 15.0, said.append)
    assert len(given) == 2
    assert kept.summary is given[1].summary
    assert kept.noise_pcts == pytest.approx((40.0, 5.0))
    assert kept.rerun
    assert said == [
        "switchyard-1w unary-c1: others used 40% of a core (> 15%): running it once more"
    ]


async def test_a_noisier_rerun_keeps_the_first_and_there_is_no_third() -> None:
    measure, given = _measures(40.0, 60.0, 1.0)
    kept = await measured(measure, 15.0, lambda _: None)
    assert len(given) == 2
    assert kept.summary is given[0].summary
    assert noise_pct(kept) == pytest.approx(40.0)
    # The threshold is the caller's: at 50% the first run was quiet enough.
    measure, given = _measures(40.0, 1.0)
    assert not (await measured(measure, 50.0, lambda _: None)).rerun
    assert len(given) == 1


async def test_the_report_says_what_was_rerun_and_its_noise() -> None:
    measure, _ = _measures(40.0, 5.0)
    rerun = await measured(measure, 15.0, lambda _: None)
    measure, _ = _measures(60.0, 30.0)
    still = await measured(measure, 15.0, lambda _: None)
    quiet = await measured(_measures(2.0)[0], 15.0, lambda _: None)
    run = Run(results=[rerun, quiet], duration_s=1.0)
    text = markdown(run, _INFO, "test")
    assert "| 5 ↻ (40 dropped) |" in text
    assert "- switchyard-1w unary-c1: 40% then 5%; kept run 2" in text
    assert "still above it" not in text
    doc = document(run, _INFO, "test")
    assert doc["reruns"] == [
        {"path": "switchyard-1w", "scenario": "unary-c1", "noise_pcts": [40.0, 5.0], "kept": 2}
    ]
    assert [r["noise_pct"] for r in doc["results"]] == pytest.approx([5.0, 2.0])
    text = markdown(Run(results=[still], duration_s=1.0), _INFO, "test")
    assert "- still above it in the kept run: switchyard-1w unary-c1 (30%)" in text
    quiet_text = markdown(Run(results=[quiet], duration_s=1.0), _INFO, "test")
    assert "- none was above it: nothing was run again" in quiet_text
