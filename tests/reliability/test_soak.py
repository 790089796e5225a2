"""A short soak (see `soak`): keepalive pings every second; one cycle of a burst, steady
mixed traffic and an idle gap of five seconds with two calls open and silent throughout,
then the burst `soak` ends with (traffic after a gap: what a second cycle would add). A
healthy edge and adapters answer every request with 200 and see no GOAWAY, no lost health
watch, and the edge ends where it started (nothing in flight, as many descriptors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.soak import Plan, soak

# gRPC clients never ping more often than once a second: the shortest interval there is.
PLAN = Plan(keepalive_s=1.0, duration_s=0.0, min_cycles=1, burst=30, concurrency=3)


@pytest.mark.slow
async def test_a_short_soak_has_only_200s_and_no_goaway(tmp_path: Path) -> None:
    report = await soak(PLAN, tmp_path)
    print(report.render())
    assert report.cycles == PLAN.min_cycles
    assert set(report.statuses) == {"200"}, report.render()
    assert report.goaways == 0, report.render()
    assert report.watch_losses == 0, report.render()
    assert report.unsettled is None, report.render()
