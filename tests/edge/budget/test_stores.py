"""Both stores, on an injected clock: reserve-then-settle, weights, key and tenant
together or not at all, periods that reset at their boundary, rolling windows."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

from switchyard.edge.auth.keysfile import Budget
from switchyard.edge.budget import Scope, Verdict
from switchyard.edge.budget.period import iso
from tests.edge.budget.conftest import Stores

PARIS = ZoneInfo("Europe/Paris")


def key(tokens: int, period: str = "month", **weights: float) -> Scope:
    return Scope("key", "acme", "k1", Budget(tokens=tokens, period=period, **weights))


def tenant(tokens: int, period: str = "month") -> Scope:
    return Scope("tenant", "acme", "acme", Budget(tokens=tokens, period=period))


def spent(verdict: Verdict) -> list[int]:
    return [s.spent for s in verdict.standings]


async def test_a_reservation_is_settled_with_the_real_usage(stores: Stores) -> None:
    budgets = stores.make()
    scopes = [key(1000)]
    first = await budgets.reserve(scopes, 100, 200)
    assert first.allowed
    assert spent(first) == [300]
    assert first.tightest is not None
    assert first.tightest.remaining == 700
    assert first.reservation is not None
    await budgets.settle(first.reservation, 40, 30)  # a refund of 230
    second = await budgets.reserve(scopes, 0, 900)
    assert second.allowed
    assert spent(second) == [970]
    assert second.reservation is not None
    await budgets.settle(second.reservation, 0, 960)  # more than reserved: charged all the same
    over = await budgets.reserve(scopes, 0, 0)
    assert spent(over) == [1030]
    assert not over.allowed
    assert over.tightest is not None
    assert over.tightest.remaining == 0


async def test_weights_price_output_apart_from_input(stores: Stores) -> None:
    budgets = stores.make()
    scopes = [key(1000, input_weight=0.5, output_weight=4)]
    verdict = await budgets.reserve(scopes, 101, 10)  # ceil(50.5 + 40)
    assert spent(verdict) == [91]
    assert verdict.reservation is not None
    await budgets.settle(verdict.reservation, 101, 3)  # ceil(50.5 + 12)
    assert spent(await budgets.reserve(scopes, 0, 0)) == [63]


async def test_a_spent_budget_refuses_and_charges_nothing_to_the_other(stores: Stores) -> None:
    budgets = stores.make()
    both = [key(1000), tenant(500)]
    assert spent(await budgets.reserve(both, 400, 0)) == [400, 400]
    refused = await budgets.reserve(both, 200, 0)  # fits the key's, not the tenant's
    assert not refused.allowed
    assert refused.reservation is None
    assert refused.refused_by is not None
    assert refused.refused_by.scope.kind == "tenant"
    assert spent(refused) == [400, 400]  # as they were: nothing charged to either
    fits = await budgets.reserve(both, 100, 0)
    assert fits.allowed
    assert spent(fits) == [500, 500]
    # Spent: even a request costing nothing (a cache hit) is refused now.
    assert not (await budgets.reserve(both, 0, 0)).allowed
    # Another key of the tenant has its own budget, and the tenant's is spent for it too.
    other = Scope("key", "acme", "k2", Budget(tokens=1000, period="month"))
    assert not (await budgets.reserve([other, tenant(500)], 1, 0)).allowed


async def test_a_request_larger_than_the_budget_is_never_admitted(stores: Stores) -> None:
    budgets = stores.make()
    verdict = await budgets.reserve([key(100)], 60, 50)
    assert not verdict.allowed
    assert spent(verdict) == [0]
    assert verdict.refused_by is not None
    assert verdict.refused_by.cost == 110


async def test_a_month_resets_at_local_midnight_of_the_first(stores: Stores) -> None:
    budgets = stores.make(PARIS)
    scopes = [key(1000)]
    stores.clock.set("2026-12-31T23:59:59+01:00")
    assert (await budgets.reserve(scopes, 1000, 0)).allowed
    refused = await budgets.reserve(scopes, 1, 0)
    assert not refused.allowed
    assert refused.refused_by is not None
    assert iso(refused.refused_by.reset_ms, PARIS) == "2027-01-01T00:00:00+01:00"
    stores.clock.set("2027-01-01T00:00:00+01:00")  # the boundary itself: a new month
    fresh = await budgets.reserve(scopes, 1, 0)
    assert fresh.allowed
    assert spent(fresh) == [1]
    assert fresh.tightest is not None
    assert iso(fresh.tightest.reset_ms, PARIS) == "2027-02-01T00:00:00+01:00"


async def test_a_day_follows_the_zone_not_utc(stores: Stores) -> None:
    budgets = stores.make(PARIS)
    scopes = [key(10, "day")]
    stores.clock.set("2027-03-27T22:30:00+00:00")  # 23:30 in Paris
    assert (await budgets.reserve(scopes, 10, 0)).allowed
    stores.clock.set("2027-03-27T23:00:00+00:00")  # still the 27th in UTC, the 28th in Paris
    assert (await budgets.reserve(scopes, 10, 0)).allowed


async def test_a_settlement_after_its_period_ended_changes_the_new_one_nothing(
    stores: Stores,
) -> None:
    budgets = stores.make()
    scopes = [key(1000, "day")]
    stores.clock.set("2027-01-01T23:59:00+00:00")
    old = await budgets.reserve(scopes, 100, 100)
    assert old.reservation is not None
    stores.clock.set("2027-01-02T00:01:00+00:00")
    new = await budgets.reserve(scopes, 10, 0)
    assert spent(new) == [10]
    await budgets.settle(old.reservation, 100, 500)  # more than reserved, but last period's
    assert spent(await budgets.reserve(scopes, 0, 0)) == [10]


async def test_a_rolling_window_lets_tokens_go_an_hour_at_a_time(stores: Stores) -> None:
    budgets = stores.make()
    scopes = [key(300, "3h")]
    for hour in ("10", "11", "12"):
        stores.clock.set(f"2027-01-01T{hour}:30:00+00:00")
        assert (await budgets.reserve(scopes, 100, 0)).allowed
    refused = await budgets.reserve(scopes, 1, 0)
    assert not refused.allowed
    assert refused.refused_by is not None
    # The 10:00 hour's tokens leave the window at 13:00.
    assert iso(refused.refused_by.reset_ms, ZoneInfo("UTC")) == "2027-01-01T13:00:00+00:00"
    stores.clock.set("2027-01-01T13:00:00+00:00")
    back = await budgets.reserve(scopes, 100, 0)
    assert back.allowed
    assert spent(back) == [300]
    stores.clock.set("2027-01-01T23:00:00+00:00")  # long idle: everything has left
    assert spent(await budgets.reserve(scopes, 1, 0)) == [1]


async def test_a_refund_emptying_the_oldest_hour_moves_the_reset(stores: Stores) -> None:
    budgets = stores.make()
    scopes = [key(300, "3h")]
    stores.clock.set("2027-01-01T10:30:00+00:00")
    first = await budgets.reserve(scopes, 100, 0)
    assert first.reservation is not None
    stores.clock.set("2027-01-01T11:30:00+00:00")
    assert (await budgets.reserve(scopes, 100, 0)).allowed
    await budgets.settle(first.reservation, 0, 0)  # the 10:00 request never ran
    verdict = await budgets.reserve(scopes, 100, 0)
    assert spent(verdict) == [200]
    assert verdict.tightest is not None
    assert iso(verdict.tightest.reset_ms, ZoneInfo("UTC")) == "2027-01-01T14:00:00+00:00"


async def test_concurrent_reservations_never_exceed_the_budget(stores: Stores) -> None:
    budgets = [stores.make(), stores.make()]  # two edges' stores (one Redis, or one process)
    if stores.redis_url is None:
        budgets = budgets[:1]
    scopes = [key(1000), tenant(100_000)]
    verdicts = await asyncio.gather(
        *(budgets[i % len(budgets)].reserve(scopes, 50, 50) for i in range(40))
    )
    assert sum(v.allowed for v in verdicts) == 10
    assert spent(await budgets[0].reserve(scopes, 0, 0)) == [1000, 1000]
