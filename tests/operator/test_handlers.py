"""The operator against the emulated API server: children, status, updates, idempotency,
restarts and deletion. The operator runs as in production (kopf, our handlers and settings)
and talks to the emulator over HTTP; tests act as users and as the Deployment controller.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kmock
import kopf
import kubernetes_validate
import pytest
from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import Deployment

from switchyard.operator import naming
from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.children import render
from switchyard.operator.kube import ModelBackendResource
from tests.operator.apiserver import BACKENDS, DEPLOYMENTS, EVENTS, PDBS, SERVICES, ApiServer
from tests.operator.harness import (
    EXAMPLES,
    NAMESPACE,
    FakeClock,
    FakeLoad,
    OperatorThread,
    backend,
    eventually,
    example,
    operator_settings,
)
from tests.operator.steps import (
    children_of,
    create,
    deployment_when,
    events_for,
    patch_spec,
    set_deployment_status,
    settled,
    status_of,
    without_server_fields,
)


@pytest.mark.parametrize("name", EXAMPLES)
async def test_applying_an_example_creates_exactly_its_children(
    name: str, api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    raw = example(name)
    backend_name = raw["metadata"]["name"]
    await create(client, raw)
    await eventually(lambda: all(len(v) == 1 for v in children_of(api).values()), what="children")
    stored = api.find(BACKENDS, NAMESPACE, backend_name)
    assert stored is not None
    spec = ModelBackendSpec.model_validate(stored["spec"])
    replicas = api.live(DEPLOYMENTS, NAMESPACE)[0]["spec"]["replicas"]
    expected = render(backend_name, NAMESPACE, spec, operator.settings, replicas)
    kopf.adopt(expected.all(), owner=kopf.Body(stored))  # type: ignore[arg-type]
    found = children_of(api)
    assert without_server_fields(found["deployments"][0]) == expected.deployment
    assert without_server_fields(found["services"][0]) == expected.service
    assert without_server_fields(found["pdbs"][0]) == expected.pdb
    for kind in found.values():
        obj = kind[0]
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "switchyard.dev/v1alpha1",
            "kind": "ModelBackend",
            "name": backend_name,
            "uid": stored["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        kubernetes_validate.validate(obj, "1.33", strict=True)
    # Min replicas (or zero for a backend that scales to zero), no finalizer ever.
    assert (
        replicas
        == raw["spec"]["scaling"]["minReplicas"] + raw["spec"]["scaling"].get("warmReplicas", 0)
        or replicas == 1
    )
    assert not stored["metadata"].get("finalizers")
    status = await eventually(lambda: status_of(api, backend_name).get("endpoint"), what="status")
    assert status == f"{backend_name}-adapter.{NAMESPACE}.svc:50051"
    for event in api.live(EVENTS, NAMESPACE):
        kubernetes_validate.validate(event, "1.33", strict=True)
    created = [e for e in events_for(api, backend_name) if e[1] == "Created"]
    assert created == [
        (
            "Normal",
            "Created",
            f"created Deployment {backend_name}, Service {backend_name}-adapter "
            f"and PodDisruptionBudget {backend_name}",
        )
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"engine": "llamacpp", "model": "m"}, "spec.engine: 'llamacpp' is not one of"),
        ({"engine": "vllm", "model": "m", "scaling": {"minReplicas": 3, "maxReplicas": 2}},
         "minReplicas must not exceed maxReplicas"),
        ({"engine": "vllm", "model": "m", "resources": {"gpus": -1}},
         "spec.resources.gpus: -1 is less than the minimum of 0"),
        ({"engine": "vllm"}, "'model' is a required property"),
    ],
)  # fmt: skip
async def test_invalid_backends_are_refused_by_the_api(
    spec: dict[str, Any], message: str, api: ApiServer, client: AsyncClient
) -> None:
    with pytest.raises(ApiError) as caught:
        await create(client, backend("bad", spec))
    assert caught.value.status.code == 422
    assert message in (caught.value.status.message or "")
    assert api.live(BACKENDS) == []


async def test_an_invalid_spec_that_got_in_is_reported_as_failed(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    """A cluster whose CRD predates a rule: the operator refuses what the rule would have."""
    api.validation = False
    await create(
        client,
        backend("tp", {"engine": "vllm", "model": "m", "resources": {"gpus": 1},
                       "parallelism": {"tensor": 4}}),
    )  # fmt: skip
    status = await settled(api, "tp", "Failed")
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert "parallelism.tensor must not exceed resources.gpus" in ready["message"]
    await eventually(lambda: any(e[1] == "InvalidSpec" for e in events_for(api, "tp")))
    assert children_of(api) == {"deployments": [], "services": [], "pdbs": []}


async def test_status_follows_the_deployment(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    raw = backend(
        "llama",
        {"engine": "vllm", "model": "m", "simulated": True,
         "scaling": {"minReplicas": 2, "maxReplicas": 2}},
    )  # fmt: skip
    await create(client, raw)
    loading = await settled(api, "llama", "Loading")
    assert (loading["desiredReplicas"], loading["readyReplicas"]) == (2, 0)
    assert loading["observedGeneration"] == 1

    await set_deployment_status(client, "llama", replicas=2, readyReplicas=1, updatedReplicas=2)
    degraded = await settled(api, "llama", "Degraded")
    conditions = {c["type"]: c for c in degraded["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["message"] == "1/2 replicas ready"

    await set_deployment_status(client, "llama", readyReplicas=2)
    ready = await settled(api, "llama", "Ready")
    assert {c["type"]: c["status"] for c in ready["conditions"]} == {
        "Ready": "True",
        "Available": "True",
        "Served": "True",
    }
    assert ready["readyReplicas"] == 2
    assert ready["warmReplicas"] == 2  # no load: both idle

    await set_deployment_status(client, "llama", readyReplicas=1)
    await settled(api, "llama", "Degraded")
    await set_deployment_status(client, "llama", readyReplicas=2)
    await settled(api, "llama", "Ready")

    # Every replica lost, and the rollout gave up: Failed, with the controller's words.
    await set_deployment_status(
        client,
        "llama",
        readyReplicas=0,
        conditions=[{"type": "Progressing", "status": "False",
                     "reason": "ProgressDeadlineExceeded",
                     "message": 'ReplicaSet "llama-1" has timed out progressing.'}],
    )  # fmt: skip
    failed = await settled(api, "llama", "Failed")
    assert "timed out progressing" in failed["conditions"][0]["message"]

    expected = ["Loading", "Degraded", "Ready", "Degraded", "Ready", "Failed"]
    await eventually(
        lambda: [e[1] for e in events_for(api, "llama") if e[1] != "Created"] == expected,
        what="an event per phase",
    )
    warnings = {e[1] for e in events_for(api, "llama") if e[0] == "Warning"}
    assert warnings == {"Degraded", "Failed"}


async def test_spec_updates_converge(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    await create(client, example("vllm-sim"))
    name = "demo-vllm"
    await settled(api, name, "Loading")
    first = api.find(DEPLOYMENTS, NAMESPACE, name)
    assert first is not None
    hash_key = naming.TEMPLATE_HASH_ANNOTATION

    # Scaling only: replicas move, the pods do not roll.
    await patch_spec(client, name, {"scaling": {"minReplicas": 2, "maxReplicas": 4}})
    scaled = await deployment_when(api, name, lambda d: d["spec"]["replicas"] == 2, "scaled")
    assert scaled["spec"]["template"] == first["spec"]["template"]
    assert scaled["metadata"]["annotations"][hash_key] == first["metadata"]["annotations"][hash_key]
    await eventually(lambda: status_of(api, name).get("observedGeneration") == 2)

    # The model: a rollout.
    await patch_spec(client, name, {"model": "switchyard/sim-8b-instruct"})
    rolled = await deployment_when(
        api,
        name,
        lambda d: (
            "switchyard/sim-8b-instruct" in d["spec"]["template"]["spec"]["containers"][0]["args"]
        ),
        "rolled out",
    )
    assert rolled["metadata"]["annotations"][hash_key] != first["metadata"]["annotations"][hash_key]
    assert rolled["spec"]["replicas"] == 2
    await eventually(lambda: any(e[1] == "RollingOut" for e in events_for(api, name)))

    # The engine: new image, command, ports and labels; the same selector and Service.
    await patch_spec(client, name, {"engine": "sglang"})
    switched = await deployment_when(
        api, name, lambda d: d["metadata"]["labels"][naming.LABEL_ENGINE] == "sglang", "switched"
    )
    engine, adapter = switched["spec"]["template"]["spec"]["containers"]
    assert engine["command"] == ["python", "-m", "switchyard.enginesim.sglang"]
    assert engine["ports"][0]["containerPort"] == 30000
    assert adapter["image"] == "adapter-sglang:test"
    assert switched["spec"]["selector"] == first["spec"]["selector"]
    await eventually(
        lambda: (
            (api.find(SERVICES, NAMESPACE, f"{name}-adapter") or {})["metadata"]["labels"][
                naming.LABEL_ENGINE
            ]
            == "sglang"
        ),
        what="the Service relabelled",
    )
    status = await eventually(
        lambda: (
            status_of(api, name) if status_of(api, name).get("observedGeneration") == 4 else None
        )
    )
    assert status["engine"] == "sglang"
    assert {k: len(v) for k, v in children_of(api).items()} == {
        "deployments": 1,
        "services": 1,
        "pdbs": 1,
    }


def _writes(api: ApiServer, port: int) -> list[tuple[str, str]]:
    """(method, path) of the operator's writes to children."""
    return [
        (str(r.method.value), r.url.path)
        for r in list(api)
        if r.url.port == port
        and r.resource in (DEPLOYMENTS, SERVICES, PDBS)
        and r.method.value in ("POST", "PATCH", "PUT", "DELETE")
    ]


def _watches(api: ApiServer) -> int:
    return sum(1 for r in list(api) if r.action == kmock.action.WATCH)


async def test_replayed_watch_events_change_nothing(
    api: ApiServer, client: AsyncClient, load: FakeLoad, clock: FakeClock
) -> None:
    # Watches that end every 0.3 s: kmock replays every object on each new watch.
    running = OperatorThread(
        str(api.servers[0].url), operator_settings(NAMESPACE), load, clock, watch_timeout_s=0.3
    )
    await running.start()
    try:
        await create(client, example("sglang-sim"))
        await settled(api, "demo-sglang", "Loading")
        await load.passes("demo-sglang")  # what the creation started is done
        port = api.servers[0].port
        before = _writes(api, port)
        watches = _watches(api)
        await eventually(lambda: _watches(api) > watches + 2, what="three watches more")
        await load.passes("demo-sglang")
        assert _writes(api, port) == before
        creates = [w for w in before if w[0] == "POST"]
        assert len(creates) == 3  # one per child, ever
        assert {k: len(v) for k, v in children_of(api).items()} == {
            "deployments": 1,
            "services": 1,
            "pdbs": 1,
        }
    finally:
        await running.stop()


async def test_a_restart_mid_reconcile_finishes_the_job(
    api: ApiServer, client: AsyncClient, load: FakeLoad, clock: FakeClock
) -> None:
    release = asyncio.Event()

    async def hang(request: kmock.Request) -> None:
        await release.wait()  # the Service is stored; the answer never comes

    api[kmock.action.CREATE, SERVICES] << hang
    url = str(api.servers[0].url)
    first = OperatorThread(url, operator_settings(NAMESPACE), load, clock)
    await first.start()
    try:
        await create(client, example("tgi-sim"))
        await eventually(lambda: api.live(SERVICES, NAMESPACE), what="the service stored")
        assert api.live(PDBS, NAMESPACE) == []
    finally:
        await first.stop()  # killed half-way through the reconcile
    release.set()

    second = OperatorThread(url, operator_settings(NAMESPACE), load, clock)
    await second.start()
    try:
        await eventually(lambda: api.live(PDBS, NAMESPACE), what="the PDB after the restart")
        await settled(api, "demo-tgi", "Pending")  # tgi-sim scales to zero
        found = children_of(api)
        assert {k: len(v) for k, v in found.items()} == {"deployments": 1, "services": 1, "pdbs": 1}
        uid = api.find(BACKENDS, NAMESPACE, "demo-tgi")["metadata"]["uid"]  # type: ignore[index]
        for objs in found.values():
            assert objs[0]["metadata"]["ownerReferences"][0]["uid"] == uid
    finally:
        await second.stop()


async def test_a_restart_adopts_what_exists_without_rewriting_it(
    api: ApiServer, client: AsyncClient, load: FakeLoad, clock: FakeClock
) -> None:
    url = str(api.servers[0].url)
    first = OperatorThread(url, operator_settings(NAMESPACE), load, clock)
    await first.start()
    await create(client, example("vllm-sim"))
    await settled(api, "demo-vllm", "Loading")
    await first.stop()
    before = copy.deepcopy(children_of(api))
    answered = len(api.handled)
    second = OperatorThread(url, operator_settings(NAMESPACE), load, clock)
    await second.start()
    try:
        # The second operator resumed the backend: it applied the Deployment, the Service
        # and last the PDB again.
        await eventually(
            lambda: any(
                r.resource == PDBS and r.action == kmock.action.UPDATE
                for r in api.handled[answered:]
            ),
            what="the children applied again",
        )
        after = children_of(api)
        for kind in ("deployments", "services", "pdbs"):
            assert without_server_fields(after[kind][0]) == without_server_fields(before[kind][0])
    finally:
        await second.stop()


async def _scaling_passes(api: ApiServer, count: int) -> None:
    """Wait for `count` whole scaling passes after this call, counted by the ModelBackend
    listing each one starts with (once its watches run, the operator lists nothing else
    while no backend is left to reconcile)."""

    def listings() -> int:
        port = api.servers[0].port
        return sum(
            1
            for r in list(api.handled)
            if r.action == kmock.action.LIST and r.resource == BACKENDS and r.url.port == port
        )

    # The next listing may have been sent before this call: count one more.
    seen = listings()
    await eventually(lambda: listings() >= seen + count + 2, what=f"{count} scaling passes")


async def test_deletion_leaves_nothing_behind(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad
) -> None:
    for name in ("vllm-sim", "sglang-sim"):
        await create(client, example(name))
    await eventually(lambda: len(api.live(DEPLOYMENTS, NAMESPACE)) == 2)
    await settled(api, "demo-vllm", "Loading")
    await client.delete(ModelBackendResource, "demo-vllm", namespace=NAMESPACE)
    await eventually(lambda: len(api.live(DEPLOYMENTS, NAMESPACE)) == 1, what="garbage collected")
    await load.passes("demo-sglang", count=2)  # scaling passes later: still gone
    left = children_of(api)
    for objs in left.values():
        assert [o["metadata"]["labels"][naming.LABEL_BACKEND] for o in objs] == ["demo-sglang"]
    await client.delete(ModelBackendResource, "demo-sglang", namespace=NAMESPACE)
    await eventually(lambda: children_of(api) == {"deployments": [], "services": [], "pdbs": []})
    await _scaling_passes(api, count=2)  # with nothing left to scale: still nothing
    assert children_of(api) == {"deployments": [], "services": [], "pdbs": []}
    assert api.live(BACKENDS) == []


async def test_a_deleted_deployment_is_recreated(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    await create(client, example("vllm-sim"))
    await settled(api, "demo-vllm", "Loading")
    old = api.find(DEPLOYMENTS, NAMESPACE, "demo-vllm")
    assert old is not None
    await client.delete(Deployment, "demo-vllm", namespace=NAMESPACE)
    new = await deployment_when(
        api, "demo-vllm", lambda d: d["metadata"]["uid"] != old["metadata"]["uid"], "recreated"
    )
    assert new["spec"]["template"] == old["spec"]["template"]
