"""The scaling decision, as tables: warm headroom, bounds, the scale-down delay, zero."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from switchyard.operator.api import Scaling
from switchyard.operator.scaling import (
    MIN_DEMAND_WINDOW_S,
    Load,
    PendingScaleDown,
    Policy,
    decide,
    demand_replicas,
)

T0 = 1_000_000.0


def policy(
    low: int = 1, high: int = 4, warm: int = 0, target: int = 10, delay: float = 300
) -> Policy:
    return Policy(
        min_replicas=low,
        max_replicas=high,
        warm_replicas=warm,
        target_in_flight=target,
        scale_down_delay_s=delay,
    )


def test_policy_from_spec() -> None:
    scaling = Scaling.model_validate(
        {"minReplicas": 0, "maxReplicas": 5, "warmReplicas": 2,
         "targetInFlightPerReplica": 8, "scaleDownDelaySeconds": 60}
    )  # fmt: skip
    assert Policy.from_spec(scaling) == Policy(0, 5, 2, 8, 60.0)


@pytest.mark.parametrize(
    ("in_flight", "target", "expected"),
    [(0, 10, 0), (1, 10, 1), (10, 10, 1), (11, 10, 2), (100, 32, 4), (-3, 10, 0)],
)
def test_demand_is_in_flight_over_target_rounded_up(
    in_flight: int, target: int, expected: int
) -> None:
    assert demand_replicas(in_flight, target) == expected


@dataclass(frozen=True)
class Row:
    """One observation: the policy, the replicas now, the load; what to run."""

    name: str
    policy: Policy
    current: int
    in_flight: int
    desired: int
    reason: str


ROWS = [
    Row("idle stays at min", policy(low=1), 1, 0, 1, "Steady"),
    Row("warm headroom on top of demand", policy(warm=1), 1, 15, 3, "ScaledUp"),
    Row("warm replicas even when idle", policy(low=0, warm=2), 0, 0, 2, "ScaledUp"),
    Row("capped at max", policy(high=4, warm=1), 2, 1000, 4, "ScaledUp"),
    Row("min floor", policy(low=2), 0, 0, 2, "ScaledUp"),
    Row("up at once", policy(), 1, 31, 4, "ScaledUp"),
    Row("exactly at target", policy(), 2, 20, 2, "Steady"),
    Row("above max comes down to max at once", policy(high=2), 5, 1000, 2, "ScaledDown"),
    Row("below min goes up to min", policy(low=3), 1, 0, 3, "ScaledUp"),
    Row("zero stays zero when min and warm are 0", policy(low=0), 0, 0, 0, "Steady"),
    Row("load wakes zero", policy(low=0), 0, 5, 1, "ScaledUp"),
    Row("lower load waits for the delay", policy(), 3, 5, 3, "ScaleDownPending"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_decision_table(row: Row) -> None:
    decision = decide(
        row.policy,
        current=row.current,
        load=Load(row.in_flight, reporting=row.current),
        demanded_at=None,
        pending=None,
        now=T0,
    )
    assert (decision.desired, decision.reason) == (row.desired, row.reason)
    assert decision.recommended == row.policy.clamp(
        demand_replicas(row.in_flight, row.policy.target_in_flight) + row.policy.warm_replicas
    )


def test_scale_down_waits_out_the_delay_then_goes_to_the_highest_recommendation() -> None:
    p = policy(low=1, high=8, delay=300)
    current = 6
    first = decide(p, current=current, load=Load(10, 6), demanded_at=None, pending=None, now=T0)
    assert first.desired == 6
    assert first.pending == PendingScaleDown(since=T0, replicas=1)
    # A brief rise (still below 6) is remembered; the wait goes on.
    second = decide(
        p, current=current, load=Load(35, 6), demanded_at=None, pending=first.pending, now=T0 + 100
    )
    assert second.desired == 6
    assert second.pending == PendingScaleDown(since=T0, replicas=4)
    third = decide(
        p, current=current, load=Load(0, 6), demanded_at=None, pending=second.pending, now=T0 + 299
    )
    assert third.desired == 6
    done = decide(
        p, current=current, load=Load(0, 6), demanded_at=None, pending=third.pending, now=T0 + 300
    )
    assert (done.desired, done.reason, done.pending) == (4, "ScaledDown", None)
    # From 4 the next step down starts its own wait.
    later = decide(p, current=4, load=Load(0, 4), demanded_at=None, pending=None, now=T0 + 301)
    assert later.desired == 4
    assert later.pending == PendingScaleDown(since=T0 + 301, replicas=1)


def test_a_rise_back_cancels_the_pending_scale_down() -> None:
    p = policy(delay=300)
    pending = PendingScaleDown(since=T0, replicas=1)
    decision = decide(
        p, current=3, load=Load(30, 3), demanded_at=None, pending=pending, now=T0 + 299
    )
    assert decision.desired == 3
    assert decision.pending is None
    after = decide(p, current=3, load=Load(0, 3), demanded_at=None, pending=None, now=T0 + 301)
    assert after.desired == 3  # the wait started again


def test_no_flapping_under_an_oscillating_load() -> None:
    """A load that swings every pass never moves the replicas down, and up only once."""
    p = policy(high=8, delay=60)
    current, pending = 1, None
    history = []
    for step in range(60):
        in_flight = 35 if step % 2 == 0 else 5
        decision = decide(
            p, current=current, load=Load(in_flight, current), demanded_at=None,
            pending=pending, now=T0 + step * 10,
        )  # fmt: skip
        current, pending = decision.desired, decision.pending
        history.append(current)
    assert history[0] == 4
    assert set(history) == {4}


def test_zero_delay_scales_down_at_once() -> None:
    decision = decide(
        policy(delay=0), current=3, load=Load(0, 3), demanded_at=None, pending=None, now=T0
    )
    assert (decision.desired, decision.pending) == (1, None)


def test_without_every_replica_reporting_it_never_scales_down() -> None:
    p = policy(delay=0)
    held = decide(p, current=3, load=Load(0, reporting=2), demanded_at=None, pending=None, now=T0)
    assert (held.desired, held.reason) == (3, "Holding")
    # Partial reports still justify going up.
    up = decide(p, current=2, load=Load(40, reporting=1), demanded_at=None, pending=None, now=T0)
    assert up.desired == 4


def test_unknown_load_holds_and_keeps_the_pending_wait() -> None:
    pending = PendingScaleDown(since=T0, replicas=1)
    decision = decide(policy(), current=3, load=None, demanded_at=None, pending=pending, now=T0 + 5)
    assert decision.desired == 3
    assert decision.pending == pending


@pytest.mark.parametrize(
    ("age", "delay", "desired"),
    [
        (0, 300, 1),
        (299, 300, 1),
        (300, 300, 0),
        (MIN_DEMAND_WINDOW_S - 1, 0, 1),  # a backend with no delay still wakes up
        (MIN_DEMAND_WINDOW_S, 0, 0),
        (-30, 300, 1),  # a clock a little ahead at the edge
    ],
)
def test_demand_annotation_wakes_a_backend_at_zero(age: float, delay: float, desired: int) -> None:
    p = policy(low=0, warm=0, delay=delay)
    decision = decide(p, current=0, load=Load(0, 0), demanded_at=T0 - age, pending=None, now=T0)
    assert decision.desired == desired


def test_demand_annotation_adds_warm_replicas_and_respects_max() -> None:
    p = policy(low=0, high=2, warm=3)
    decision = decide(p, current=0, load=None, demanded_at=T0, pending=None, now=T0)
    assert decision.desired == 2


def test_scale_to_zero_only_when_min_and_warm_are_zero() -> None:
    for low, warm in [(1, 0), (0, 1), (0, 0)]:
        decision = decide(
            policy(low=low, warm=warm, delay=0), current=2, load=Load(0, 2),
            demanded_at=None, pending=None, now=T0,
        )  # fmt: skip
        assert (decision.desired == 0) == (low == 0 and warm == 0)


def test_a_pending_wait_for_a_count_that_is_no_longer_lower_restarts() -> None:
    stale = PendingScaleDown(since=T0 - 1000, replicas=5)
    decision = decide(
        policy(high=8), current=3, load=Load(0, 3), demanded_at=None, pending=stale, now=T0
    )
    assert decision.desired == 3
    assert decision.pending == PendingScaleDown(since=T0, replicas=1)


def external(asked: int, low: int = 1, high: int = 4) -> Policy:
    return Policy(low, high, warm_replicas=1, target_in_flight=10, scale_down_delay_s=300,
                  external_replicas=asked)  # fmt: skip


def test_external_mode_comes_from_the_spec_only_in_external_mode() -> None:
    spec = {"minReplicas": 0, "maxReplicas": 5, "mode": "external", "replicas": 3}
    assert Policy.from_spec(Scaling.model_validate(spec)).external_replicas == 3
    assert Policy.from_spec(Scaling()).external_replicas is None


@pytest.mark.parametrize(
    ("asked", "current", "in_flight", "desired", "reason"),
    [
        (3, 1, 0, 3, "ScaledUp"),  # up although idle
        (1, 3, 1000, 1, "ScaledDown"),  # down at once although loaded: no delay, no fight
        (2, 2, 1000, 2, "Steady"),
        (9, 2, 0, 4, "ScaledUp"),  # clamped to max
        (0, 2, 0, 1, "ScaledDown"),  # clamped to min
    ],
)
def test_external_mode_runs_the_asked_replicas_clamped(
    asked: int, current: int, in_flight: int, desired: int, reason: str
) -> None:
    pending = PendingScaleDown(since=T0 - 10, replicas=1)
    decision = decide(
        external(asked), current=current, load=Load(in_flight, current),
        demanded_at=T0, pending=pending, now=T0,
    )  # fmt: skip
    assert (decision.desired, decision.reason, decision.pending) == (desired, reason, None)
    assert decision.recommended == desired
