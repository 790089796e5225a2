"""Scaling end to end: a fake load source drives the Deployment's replicas up at once and
down after the delay (on a clock the test moves); the edge's demand wakes a backend at zero.
"""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from switchyard.operator import naming
from switchyard.operator.kube import ModelBackendResource
from switchyard.operator.status import rfc3339
from tests.operator.apiserver import DEPLOYMENTS, ApiServer
from tests.operator.harness import (
    NAMESPACE,
    FakeClock,
    FakeLoad,
    OperatorThread,
    eventually,
    example,
)
from tests.operator.steps import (
    create,
    events_for,
    set_deployment_status,
    settled,
    status_of,
)


def replicas(api: ApiServer, name: str) -> int | None:
    found = api.find(DEPLOYMENTS, NAMESPACE, name)
    return None if found is None else int(found["spec"]["replicas"])


async def replicas_become(api: ApiServer, name: str, count: int) -> None:
    await eventually(lambda: replicas(api, name) == count, what=f"{name} at {count} replicas")


async def replicas_stay(api: ApiServer, load: FakeLoad, name: str, count: int) -> None:
    """After a scaling pass that saw the load and the clock as they are now, `count`
    replicas still (the next pass starts from there: a change later is another test's)."""
    await load.passes(name)
    assert replicas(api, name) == count


async def test_load_moves_replicas_up_at_once_and_down_after_the_delay(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad, clock: FakeClock
) -> None:
    # demo-sglang: min 1, max 3, warm 1, 16 in flight per replica, 60 s scale-down delay.
    name = "demo-sglang"
    await create(client, example("sglang-sim"))
    await replicas_become(api, name, 1)

    load.set(NAMESPACE, name, in_flight=40)  # demand 3, +1 warm, capped at 3
    await replicas_become(api, name, 3)
    status = await eventually(
        lambda: status_of(api, name).get("desiredReplicas") == 3 and status_of(api, name)
    )
    assert status["demandReplicas"] == 3

    load.set(NAMESPACE, name, in_flight=0)  # recommends 1: only after 60 s
    await eventually(
        lambda: status_of(api, name).get("pendingScaleDown"), what="a pending scale-down"
    )
    assert status_of(api, name)["pendingScaleDown"]["replicas"] == 1
    await replicas_stay(api, load, name, 3)
    load.set(NAMESPACE, name, in_flight=10)  # a small rise during the wait: recommends 2
    await eventually(
        lambda: (status_of(api, name).get("pendingScaleDown") or {}).get("replicas") == 2
    )
    clock.advance(30)
    await replicas_stay(api, load, name, 3)
    clock.advance(31)
    await replicas_become(api, name, 2)  # the highest recommendation of the wait
    load.set(NAMESPACE, name, in_flight=0)
    await replicas_stay(api, load, name, 2)
    clock.advance(61)
    await replicas_become(api, name, 1)
    await replicas_stay(api, load, name, 1)  # min 1 (the warm replica): never below

    await eventually(
        lambda: (
            [e[1] for e in events_for(api, name) if e[1].startswith("Scaled")]
            == ["ScaledUp", "ScaledDown", "ScaledDown"]
        ),
        what="scaling events",
    )
    up = next(e for e in events_for(api, name) if e[1] == "ScaledUp")
    assert up[2].startswith(f"scaled Deployment {name} from 1 to 3 replicas (40 requests in flight")


async def annotate_demand(client: AsyncClient, name: str, at: float) -> None:
    patch: dict[str, Any] = {"metadata": {"annotations": {naming.DEMAND_ANNOTATION: rfc3339(at)}}}
    await client.patch(
        ModelBackendResource, name, patch, namespace=NAMESPACE, patch_type=PatchType.MERGE
    )


async def test_scale_to_zero_and_wake_up_on_demand(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad, clock: FakeClock
) -> None:
    # demo-tgi: min 0, warm 0, max 2, 60 s delay.
    name = "demo-tgi"
    await create(client, example("tgi-sim"))
    pending = await settled(api, name, "Pending")
    assert pending["conditions"][0]["reason"] == "ScaledToZero"
    assert replicas(api, name) == 0

    await annotate_demand(client, name, clock.now)  # what the edge does on a request
    await replicas_become(api, name, 1)
    await settled(api, name, "Loading")
    await set_deployment_status(client, name, replicas=1, readyReplicas=1, updatedReplicas=1)
    await settled(api, name, "Ready")

    await replicas_stay(api, load, name, 1)  # the demand is fresh
    clock.advance(60)  # stale now; idle: the wait for zero starts
    await eventually(lambda: status_of(api, name).get("pendingScaleDown"))
    await replicas_stay(api, load, name, 1)
    clock.advance(60)
    await replicas_become(api, name, 0)
    await settled(api, name, "Pending")

    await annotate_demand(client, name, clock.now)
    await replicas_become(api, name, 1)


async def test_a_wake_from_zero_is_timed_for_the_edge(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, clock: FakeClock
) -> None:
    """From the scale-up to the first ready replica, on the operator's clock: the edge's
    Retry-After for the next wake."""
    clock.now = float(int(clock.now))  # the status keeps whole seconds
    name = "demo-tgi"  # min 0, warm 0
    await create(client, example("tgi-sim"))
    await settled(api, name, "Pending")
    assert "lastWakeSeconds" not in status_of(api, name)

    woke_at = clock.now
    await annotate_demand(client, name, woke_at)
    await replicas_become(api, name, 1)
    waking = await eventually(lambda: status_of(api, name).get("wakingSince"), what="waking")
    assert waking == rfc3339(woke_at)

    clock.advance(9)
    await set_deployment_status(client, name, replicas=1, readyReplicas=1, updatedReplicas=1)
    ready = await settled(api, name, "Ready")
    assert ready["lastWakeSeconds"] == 9
    assert "wakingSince" not in ready


async def test_replicas_that_do_not_report_hold_the_count(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad, clock: FakeClock
) -> None:
    name = "demo-vllm"  # min 1, max 3, 16 per replica, 60 s delay
    await create(client, example("vllm-sim"))
    load.set(NAMESPACE, name, in_flight=48)
    await replicas_become(api, name, 3)
    load.set(NAMESPACE, name, in_flight=0, reporting=2)  # one replica is restarting
    clock.advance(3600)
    await replicas_stay(api, load, name, 3)
    assert status_of(api, name).get("pendingScaleDown") is None
    load.set(NAMESPACE, name, in_flight=0)
    await eventually(lambda: status_of(api, name).get("pendingScaleDown"))
    clock.advance(60)
    await replicas_become(api, name, 1)


async def test_a_scaling_change_applies_at_once(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad
) -> None:
    name = "demo-vllm"
    await create(client, example("vllm-sim"))
    load.set(NAMESPACE, name, in_flight=48)
    await replicas_become(api, name, 3)
    await client.patch(
        ModelBackendResource, name, {"spec": {"scaling": {"maxReplicas": 2}}},
        namespace=NAMESPACE, patch_type=PatchType.MERGE,
    )  # fmt: skip
    await replicas_become(api, name, 2)  # a lower max needs no delay
