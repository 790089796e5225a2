"""Status from the Deployment: phases, conditions, warm replicas."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.operator.api import ModelBackendSpec, ModelBackendStatus
from switchyard.operator.claims import Verdict
from switchyard.operator.scaling import PendingScaleDown
from switchyard.operator.status import (
    ScalingView,
    WakeView,
    backend_status,
    changed,
    observe,
    parse_rfc3339,
    rfc3339,
)

T0 = 1_700_000_000.0
SPEC = ModelBackendSpec.model_validate({"engine": "vllm", "model": "m"})


def deployment(desired: int, ready: int = 0, **status: Any) -> dict[str, Any]:
    return {"spec": {"replicas": desired}, "status": {"readyReplicas": ready, **status}}


PROGRESS_DEADLINE = {
    "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "x" has timed out progressing.'}
    ]
}  # fmt: skip
QUOTA = {
    "conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": "exceeded quota: gpus"}
    ]
}  # fmt: skip


@pytest.mark.parametrize(
    ("dep", "phase", "reason"),
    [
        (None, "Pending", "Creating"),
        (deployment(0), "Pending", "ScaledToZero"),
        (deployment(2, 0), "Loading", "Loading"),
        (deployment(2, 1), "Degraded", "ReplicasUnavailable"),
        (deployment(2, 2), "Ready", "ReplicasReady"),
        (deployment(2, 3), "Ready", "ReplicasReady"),
        (deployment(2, 0, **PROGRESS_DEADLINE), "Failed", "ProgressDeadlineExceeded"),
        (deployment(2, 0, **QUOTA), "Failed", "FailedCreate"),
        (deployment(2, 1, **PROGRESS_DEADLINE), "Degraded", "ReplicasUnavailable"),
    ],
)
def test_phase_follows_the_deployment(dep: dict[str, Any] | None, phase: str, reason: str) -> None:
    observation = observe(dep)
    assert (observation.phase, observation.reason) == (phase, reason)


def test_failed_carries_the_deployments_message() -> None:
    assert "timed out progressing" in observe(deployment(1, 0, **PROGRESS_DEADLINE)).message


def test_invalid_spec_is_failed() -> None:
    observation = observe(None, invalid="spec.engine: bad")
    assert (observation.phase, observation.reason, observation.message) == (
        "Failed",
        "InvalidSpec",
        "spec.engine: bad",
    )


SERVED = Verdict(True, "Served", "the edge routes llama to this backend")
CONFLICT = Verdict(False, "NameConflict", "model name 'llama' is served by ModelBackend a/llama")


def status(dep: dict[str, Any] | None, previous: dict[str, Any] | None = None, now: float = T0,
           view: ScalingView | None = None, served: Verdict | None = SERVED,
           wake: WakeView | None = None) -> dict[str, Any]:  # fmt: skip
    return backend_status(
        name="llama",
        namespace="models",
        generation=3,
        spec=SPEC,
        deployment=dep,
        scaling=view or ScalingView(demand=0, pending=None),
        previous=previous or {},
        now=now,
        served=served,
        wake=wake,
    )


def test_the_whole_status() -> None:
    result = status(deployment(2, 2, replicas=2), view=ScalingView(demand=1, pending=None))
    assert result == {
        "phase": "Ready",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasReady",
             "message": "2/2 replicas serving", "lastTransitionTime": rfc3339(T0),
             "observedGeneration": 3},
            {"type": "Available", "status": "True", "reason": "ReplicasAvailable",
             "message": "2 serving", "lastTransitionTime": rfc3339(T0), "observedGeneration": 3},
            {"type": "Served", "status": "True", "reason": "Served",
             "message": "the edge routes llama to this backend", "lastTransitionTime": rfc3339(T0),
             "observedGeneration": 3},
        ],
        "observedGeneration": 3,
        "replicas": 2,
        "selector": "app.kubernetes.io/instance=llama,app.kubernetes.io/name=model-backend",
        "readyReplicas": 2,
        "desiredReplicas": 2,
        "warmReplicas": 1,
        "demandReplicas": 1,
        "pendingScaleDown": None,
        "endpoint": "llama-adapter.models.svc:50051",
        "servedModelName": "llama",
        "engine": "vllm",
        "wakingSince": None,
        "lastWakeSeconds": None,
    }  # fmt: skip
    ModelBackendStatus.model_validate({k: v for k, v in result.items() if v is not None})


def test_transition_times_move_only_when_the_condition_flips() -> None:
    first = status(deployment(2, 2))
    same = status(deployment(2, 2), previous=first, now=T0 + 60)
    assert same["conditions"] == first["conditions"]
    flipped = status(deployment(2, 1), previous=first, now=T0 + 120)
    ready = {c["type"]: c for c in flipped["conditions"]}
    assert ready["Ready"]["lastTransitionTime"] == rfc3339(T0 + 120)
    assert ready["Available"]["lastTransitionTime"] == rfc3339(T0)  # still available


def test_pending_scale_down_round_trips_through_the_status() -> None:
    pending = PendingScaleDown(since=T0, replicas=2)
    result = status(deployment(3, 3), view=ScalingView(demand=1, pending=pending))
    assert result["pendingScaleDown"] == {"since": rfc3339(T0), "replicas": 2}
    assert ScalingView.from_status(result) == ScalingView(demand=1, pending=pending)
    assert ScalingView.from_status({}) == ScalingView(demand=0, pending=None)


def test_warm_replicas_are_ready_beyond_demand() -> None:
    assert status(deployment(3, 3), view=ScalingView(demand=1, pending=None))["warmReplicas"] == 2
    assert status(deployment(3, 1), view=ScalingView(demand=2, pending=None))["warmReplicas"] == 0


def test_changed_ignores_a_rewrite_of_the_same_status() -> None:
    first = status(deployment(1, 1))
    applied = {k: v for k, v in first.items() if v is not None}
    assert not changed(first, applied)
    assert changed(status(deployment(1, 0)), applied)


def test_timestamps() -> None:
    assert rfc3339(T0) == "2023-11-14T22:13:20Z"
    assert parse_rfc3339("2023-11-14T22:13:20Z") == T0
    assert parse_rfc3339("2023-11-14T22:13:20+00:00") == T0
    assert parse_rfc3339("2023-11-14T22:13:20") == T0
    assert parse_rfc3339("yesterday") is None


@pytest.mark.parametrize(
    ("dep", "phase"),
    [(deployment(2, 2), "NotServed"), (deployment(0), "NotServed"),
     (deployment(2, 0, **PROGRESS_DEADLINE), "Failed")],
)  # fmt: skip
def test_a_backend_whose_names_go_elsewhere_is_not_served(dep: dict[str, Any], phase: str) -> None:
    """Whatever its replicas do, it does not claim Ready for traffic it does not get (a
    failure still says Failed: that is the more urgent news)."""
    result = status(dep, served=CONFLICT)
    assert result["phase"] == phase
    conditions = {c["type"]: c for c in result["conditions"]}
    assert conditions["Served"]["status"] == "False"
    assert conditions["Served"]["reason"] == "NameConflict"
    assert "a/llama" in conditions["Served"]["message"]
    assert conditions["Ready"]["status"] == "False"
    if phase == "NotServed":
        assert conditions["Ready"]["reason"] == "NameConflict"


def test_replicas_stay_available_while_not_served() -> None:
    conditions = {c["type"]: c for c in status(deployment(2, 2), served=CONFLICT)["conditions"]}
    assert conditions["Available"]["status"] == "True"


def test_a_wake_is_timed_from_the_scale_up_to_the_first_ready_replica() -> None:
    woke = status(deployment(1, 0), wake=WakeView().started(T0))
    assert woke["wakingSince"] == rfc3339(T0)
    assert woke["lastWakeSeconds"] is None
    applied = {k: v for k, v in woke.items() if v is not None}
    still = status(deployment(1, 0), previous=applied, now=T0 + 5)
    assert still["wakingSince"] == rfc3339(T0)
    ready = status(deployment(1, 1), previous=applied, now=T0 + 11.5)
    assert (ready["wakingSince"], ready["lastWakeSeconds"]) == (None, 12)
    # The measurement stays until the next wake replaces it.
    done = {k: v for k, v in ready.items() if v is not None}
    assert status(deployment(0), previous=done, now=T0 + 900)["lastWakeSeconds"] == 12
    rewake = status(deployment(1, 0), previous=done, now=T0 + 1000,
                    wake=WakeView.from_status(done).started(T0 + 1000))  # fmt: skip
    assert (rewake["wakingSince"], rewake["lastWakeSeconds"]) == (rfc3339(T0 + 1000), 12)


def test_a_wake_abandoned_at_zero_is_not_timed() -> None:
    woke = {k: v for k, v in status(deployment(1, 0), wake=WakeView().started(T0)).items() if v}
    back = status(deployment(0), previous=woke, now=T0 + 30)
    assert (back["wakingSince"], back["lastWakeSeconds"]) == (None, None)


def test_a_wake_under_way_keeps_its_start() -> None:
    assert WakeView(since=T0).started(T0 + 10) == WakeView(since=T0)
