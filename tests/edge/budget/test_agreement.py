"""The Lua script is the memory store's arithmetic transliterated: on the same history
(reservations, settlements, the clock moving across buckets and periods), both answer
the same, call by call."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

from switchyard.edge.auth.keysfile import Budget
from switchyard.edge.budget import Reservation, Scope
from tests.edge.budget.conftest import Stores, WallClock
from tests.support.redis_topology import RedisTopology


async def test_both_stores_agree_on_a_random_history(redis_topology: RedisTopology) -> None:
    rng = random.Random(17)
    clock = WallClock("2027-03-27T20:00:00+00:00")  # across a DST change in Paris
    memory = Stores("memory", None, clock)
    shared = Stores("redis", redis_topology.url, clock)
    stores = [memory.make(ZoneInfo("Europe/Paris")), shared.make(ZoneInfo("Europe/Paris"))]
    scopes = [
        Scope("key", "acme", "k1", Budget(tokens=400, period="5h", output_weight=2.0)),
        Scope("tenant", "acme", "acme", Budget(tokens=900, period="day")),
    ]
    held: list[tuple[Reservation, Reservation]] = []
    outcomes: set[bool] = set()
    try:
        for _ in range(300):
            roll = rng.random()
            if roll < 0.15:
                clock.now += rng.choice([60, 1800, 3600, 4 * 3600, 26 * 3600])
            elif roll < 0.45 and held:
                pair = held.pop(rng.randrange(len(held)))
                used = (rng.randrange(0, 60), rng.randrange(0, 60))
                for store, reservation in zip(stores, pair, strict=True):
                    await store.settle(reservation, *used)
            else:
                asked = (rng.randrange(0, 50), rng.randrange(0, 40))
                verdicts = [await store.reserve(scopes, *asked) for store in stores]
                assert verdicts[0].allowed == verdicts[1].allowed
                assert verdicts[0].standings == verdicts[1].standings
                outcomes.add(verdicts[0].allowed)
                first, second = (v.reservation for v in verdicts)
                if first is not None and second is not None:
                    held.append((first, second))
    finally:
        for store in stores:
            await store.aclose()
    assert outcomes == {True, False}  # the history ran into the budgets, and out again
