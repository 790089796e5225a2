"""The scaling decision: one pure function of the policy, the load and the time.

    desired = clamp(demand + warmReplicas, minReplicas, maxReplicas)

where demand = ceil(requests in flight / targetInFlightPerReplica), at least 1 while the
edge's demand annotation is fresh. Going up happens at once. Going down happens only after
the lower count has been recommended for scaleDownDelaySeconds, and then to the highest
count recommended during that wait (so a dip and a spike never make replicas flap). A
decision needs the load of every replica to go down: a replica that did not report (still
loading, restarting, unreachable) holds the count where it is. Zero is reachable only when
minReplicas and warmReplicas are both 0.

In mode: external the count is the spec's `replicas` (written by HPA, KEDA or `kubectl
scale`), clamped to [minReplicas, maxReplicas], at once and whatever the load: the operator
never fights an external autoscaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from switchyard.operator.api import Scaling

#: A demand annotation counts for the scale-down delay, but at least this long, so that a
#: backend with no delay still wakes up from zero.
MIN_DEMAND_WINDOW_S: Final = 60.0

Reason = Literal["ScaledUp", "ScaledDown", "Steady", "ScaleDownPending", "Holding"]


@dataclass(frozen=True, slots=True)
class Policy:
    min_replicas: int
    max_replicas: int
    warm_replicas: int
    target_in_flight: int
    scale_down_delay_s: float
    #: mode: external: the replicas the external autoscaler asked for (None: the policy decides).
    external_replicas: int | None = None

    @classmethod
    def from_spec(cls, scaling: Scaling) -> Policy:
        return cls(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            warm_replicas=scaling.warm_replicas,
            target_in_flight=scaling.target_in_flight_per_replica,
            scale_down_delay_s=float(scaling.scale_down_delay_seconds),
            external_replicas=scaling.replicas if scaling.mode == "external" else None,
        )

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True, slots=True)
class Load:
    """Requests in flight, summed over the replicas that reported."""

    in_flight: int
    reporting: int


@dataclass(frozen=True, slots=True)
class PendingScaleDown:
    since: float  # epoch seconds
    replicas: int


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    #: clamp(demand + warm, min, max) for this observation.
    recommended: int
    #: Replicas the load (and the demand annotation) call for, before warm and bounds.
    demand: int
    pending: PendingScaleDown | None
    reason: Reason


def demand_replicas(in_flight: int, target: int) -> int:
    return math.ceil(max(in_flight, 0) / target)


def demanded(policy: Policy, demanded_at: float | None, now: float) -> bool:
    """Whether the edge asked for this backend recently."""
    if demanded_at is None:
        return False
    return now - demanded_at < max(policy.scale_down_delay_s, MIN_DEMAND_WINDOW_S)


def decide(
    policy: Policy,
    *,
    current: int,
    load: Load | None,
    demanded_at: float | None,
    pending: PendingScaleDown | None,
    now: float,
) -> Decision:
    """The replicas to run now, given the current count and what was observed.

    `load` None means "not measured" (a spec change, a demand signal): the count may go up
    or be pulled into [min, max], never down otherwise, and a pending scale-down is kept.
    """
    demand = demand_replicas(load.in_flight, policy.target_in_flight) if load else 0
    if demanded(policy, demanded_at, now):
        demand = max(demand, 1)
    recommended = policy.clamp(demand + policy.warm_replicas)
    bounded = policy.clamp(current)

    def decision(desired: int, kept: PendingScaleDown | None, waiting: bool = False) -> Decision:
        reason: Reason
        if desired > current:
            reason = "ScaledUp"
        elif desired < current:
            reason = "ScaledDown"
        elif waiting:
            reason = "ScaleDownPending" if kept else "Holding"
        else:
            reason = "Steady"
        return Decision(desired, recommended, demand, kept, reason)

    if policy.external_replicas is not None:
        asked = policy.clamp(policy.external_replicas)
        return Decision(asked, asked, demand, None, decision(asked, None).reason)
    if recommended >= bounded:
        return decision(recommended, None)
    complete = load is not None and load.reporting >= current
    if not complete:
        return decision(bounded, pending, waiting=True)
    if pending is None or pending.replicas >= bounded:
        pending = PendingScaleDown(since=now, replicas=recommended)
    else:
        pending = PendingScaleDown(pending.since, max(pending.replicas, recommended))
    if now - pending.since >= policy.scale_down_delay_s:
        return decision(pending.replicas, None)
    return decision(bounded, pending, waiting=True)
