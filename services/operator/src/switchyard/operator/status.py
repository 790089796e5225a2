"""A ModelBackend's status: a pure function of its spec, its Deployment, the scaler's view,
whether the edge serves its names, and the wake in progress.

Phases: Pending (no Deployment yet, or scaled to zero), Loading (replicas asked for, none
ready), Ready (every desired replica ready), Degraded (serving, but fewer ready replicas than
desired: one is starting, failing or being rescheduled), Failed (the spec cannot be served,
or the rollout gave up with nothing serving), NotServed (the replicas run as specified, but
the edge routes this backend's names elsewhere: another backend claimed one first, or its
namespace serves no names). Conditions: `Ready` (phase Ready: ready for traffic),
`Available` (at least one replica serving) and `Served` (the edge routes the names here),
with reasons the edge and users can act on.

A wake (scale-up from zero replicas) is timed from the scale-up to the first ready replica:
`wakingSince` while it lasts, `lastWakeSeconds` after; the edge's Retry-After follows it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any, Final

from switchyard.operator import naming
from switchyard.operator.api import ModelBackendSpec, Phase
from switchyard.operator.claims import Verdict
from switchyard.operator.scaling import PendingScaleDown

Obj = dict[str, Any]

CONDITION_TYPES: Final = ("Ready", "Available", "Served")


def rfc3339(epoch: float) -> str:
    return (
        dt.datetime.fromtimestamp(epoch, dt.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def parse_rfc3339(text: str) -> float | None:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class ScalingView:
    """What the scaler last concluded (kept in the status between passes and restarts)."""

    demand: int
    pending: PendingScaleDown | None

    @classmethod
    def from_status(cls, status: Obj) -> ScalingView:
        raw = status.get("pendingScaleDown") or None
        pending = None
        if isinstance(raw, dict):
            since = parse_rfc3339(str(raw.get("since", "")))
            if since is not None and isinstance(raw.get("replicas"), int):
                pending = PendingScaleDown(since=since, replicas=raw["replicas"])
        demand = status.get("demandReplicas")
        return cls(demand=demand if isinstance(demand, int) else 0, pending=pending)


@dataclass(frozen=True, slots=True)
class WakeView:
    """A wake from zero: when the scale-up began (while no replica is ready yet) and how long
    the last one took, both kept in the status between passes and restarts."""

    since: float | None = None
    last_s: int | None = None

    @classmethod
    def from_status(cls, status: Obj) -> WakeView:
        raw = status.get("wakingSince")
        last = status.get("lastWakeSeconds")
        return cls(
            since=parse_rfc3339(raw) if isinstance(raw, str) else None,
            last_s=last if isinstance(last, int) else None,
        )

    def started(self, now: float) -> WakeView:
        """The operator scaled up from zero now (a wake already under way keeps its start)."""
        return replace(self, since=self.since if self.since is not None else now)

    def observed(self, ready: int, desired: int, now: float) -> WakeView:
        """After looking at the Deployment: a ready replica ends the wake (and times it);
        going back to zero before one was ready abandons it."""
        if self.since is None:
            return self
        if ready > 0:
            return WakeView(None, max(0, math.ceil(now - self.since)))
        if desired == 0:
            return WakeView(None, self.last_s)
        return self


@dataclass(frozen=True, slots=True)
class Observation:
    phase: Phase
    reason: str
    message: str
    replicas: int
    ready: int
    desired: int


def _deployment_conditions(deployment: Obj) -> dict[str, Obj]:
    conditions = (deployment.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conditions}


def observe(deployment: Obj | None, invalid: str | None = None) -> Observation:
    """Phase, reason and message from the Deployment (or from why there is none)."""
    if invalid is not None:
        return Observation("Failed", "InvalidSpec", invalid, 0, 0, 0)
    if deployment is None:
        return Observation("Pending", "Creating", "the Deployment is being created", 0, 0, 0)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    if desired == 0:
        return Observation(
            "Pending",
            "ScaledToZero",
            "scaled to zero: the next request for the model wakes it up",
            replicas,
            ready,
            0,
        )
    conditions = _deployment_conditions(deployment)
    progressing = conditions.get("Progressing", {})
    failure = conditions.get("ReplicaFailure", {})
    if ready == 0:
        if progressing.get("status") == "False":
            reason = progressing.get("reason") or "RolloutFailed"
            message = progressing.get("message") or "the Deployment stopped progressing"
            return Observation("Failed", reason, message, replicas, ready, desired)
        if failure.get("status") == "True":
            reason = failure.get("reason") or "ReplicaFailure"
            message = failure.get("message") or "pods cannot be created"
            return Observation("Failed", reason, message, replicas, ready, desired)
        message = f"0/{desired} replicas ready: loading the model"
        return Observation("Loading", "Loading", message, replicas, ready, desired)
    rolling = f" (rolling out: {updated}/{desired} updated)" if 0 < updated < desired else ""
    if ready < desired:
        message = f"{ready}/{desired} replicas ready{rolling}"
        return Observation("Degraded", "ReplicasUnavailable", message, replicas, ready, desired)
    message = f"{ready}/{desired} replicas serving{rolling}"
    return Observation("Ready", "ReplicasReady", message, replicas, ready, desired)


def _condition(
    type_: str, true: bool, reason: str, message: str, generation: int | None, now: str,
    previous: Obj,
) -> Obj:  # fmt: skip
    status = "True" if true else "False"
    old = {c.get("type"): c for c in previous.get("conditions") or []}.get(type_)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    condition: Obj = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def not_served(observation: Observation, served: Verdict | None) -> Observation:
    """The phase, reason and message once the edge's routing is known: a backend whose names
    go elsewhere is NotServed (unless it failed, which says more), whatever its replicas."""
    if served is None or served.served or observation.phase == "Failed":
        return observation
    return replace(observation, phase="NotServed", reason=served.reason, message=served.message)


def conditions(
    observation: Observation,
    generation: int | None,
    now: str,
    previous: Obj,
    served: Verdict | None = None,
) -> list[Obj]:
    available = observation.ready > 0
    if available:
        avail_reason, avail_message = "ReplicasAvailable", f"{observation.ready} serving"
    elif observation.reason in ("ScaledToZero", "InvalidSpec"):
        avail_reason, avail_message = observation.reason, observation.message
    else:
        avail_reason, avail_message = "NoReplicasAvailable", observation.message
    shown = not_served(observation, served)
    out = [
        _condition(
            "Ready", shown.phase == "Ready", shown.reason, shown.message, generation, now, previous
        ),
        _condition("Available", available, avail_reason, avail_message, generation, now, previous),
    ]
    if served is not None:
        out.append(
            _condition(
                "Served", served.served, served.reason, served.message, generation, now, previous
            )
        )
    return out


def backend_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    spec: ModelBackendSpec | None,
    deployment: Obj | None,
    scaling: ScalingView,
    previous: Obj,
    now: float,
    invalid: str | None = None,
    served: Verdict | None = None,
    wake: WakeView | None = None,
) -> Obj:
    """The whole status, as a merge patch (None removes a field). `served` None: not judged
    (an invalid spec), the Served condition is left out; `wake` None: the one in `previous`."""
    observation = observe(deployment, invalid)
    stamp = rfc3339(now)
    # An invalid spec reads no Deployment: its pods are still the ones last seen.
    pods = (
        int(previous.get("replicas") or 0)
        if deployment is None and invalid is not None
        else int(((deployment or {}).get("status") or {}).get("replicas") or 0)
    )
    status: Obj = {
        "phase": not_served(observation, served).phase,
        "conditions": conditions(observation, generation, stamp, previous, served),
        "observedGeneration": generation,
        # Always written (an invalid spec too): the scale subresource reads both.
        "replicas": pods,
        "selector": naming.selector_string(name),
    }
    if spec is None:
        return status
    woken = (wake or WakeView.from_status(previous)).observed(
        observation.ready, observation.desired, now
    )
    pending = scaling.pending
    status |= {
        "readyReplicas": observation.ready,
        "desiredReplicas": observation.desired,
        "warmReplicas": max(0, observation.ready - scaling.demand),
        "demandReplicas": scaling.demand,
        "pendingScaleDown": (
            {"since": rfc3339(pending.since), "replicas": pending.replicas} if pending else None
        ),
        "endpoint": naming.endpoint(name, namespace),
        "servedModelName": spec.effective_served_name(name),
        "engine": spec.engine,
        "wakingSince": rfc3339(woken.since) if woken.since is not None else None,
        "lastWakeSeconds": woken.last_s,
    }
    return status


def changed(patch: Obj, current: Obj) -> bool:
    """Whether applying the merge patch would change the current status."""
    for key, value in patch.items():
        if value is None:
            if key in current:
                return True
        elif current.get(key) != value:
            return True
    return False
