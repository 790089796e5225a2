"""The memory store stays bounded: counters of past periods are swept away, and there are
never more than `max_counters`."""

from __future__ import annotations

from switchyard.edge.auth.keysfile import Budget
from switchyard.edge.budget import MemoryBudgets, Scope
from tests.edge.budget.conftest import WallClock


def scope(name: str) -> Scope:
    return Scope("key", "acme", name, Budget(tokens=100, period="day"))


async def test_counters_of_past_periods_are_swept_away() -> None:
    clock = WallClock("2027-01-01T12:00:00+00:00")
    budgets = MemoryBudgets(clock=clock)
    for name in ("a", "b", "c"):
        assert (await budgets.reserve([scope(name)], 10, 0)).allowed
    assert len(budgets) == 3
    clock.set("2027-01-02T00:00:00+00:00")  # their day is over
    await budgets.reserve([scope("d")], 10, 0)
    await budgets.reserve([scope("d")], 10, 0)
    assert len(budgets) == 1  # only d's: each call sweeps two
    # And what a swept key spent is gone with its day.
    assert [s.spent for s in (await budgets.reserve([scope("a")], 100, 0)).standings] == [100]


async def test_the_least_recently_charged_counter_goes_first_past_the_bound() -> None:
    clock = WallClock("2027-01-01T12:00:00+00:00")
    budgets = MemoryBudgets(clock=clock, max_counters=2)
    for name in ("a", "b", "a", "c"):
        await budgets.reserve([scope(name)], 10, 0)
    assert len(budgets) == 2
    # b was forgotten (a was charged after it); a kept its 20.
    assert [s.spent for s in (await budgets.reserve([scope("a")], 0, 1)).standings] == [21]
