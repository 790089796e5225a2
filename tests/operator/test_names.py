"""Model-name ownership through the operator, on the emulated API server: the first
ModelBackend to claim a name keeps it; a later one, in any namespace, says why it is not
served (status and a Warning event) and takes over once the owner is gone."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import AsyncClient

from switchyard.operator.kube import ModelBackendResource
from tests.operator.apiserver import BACKENDS, EVENTS, ApiServer
from tests.operator.harness import (
    FakeClock,
    FakeLoad,
    OperatorThread,
    eventually,
    example,
    operator_settings,
)


@pytest.fixture
async def cluster_operator(
    api: ApiServer, load: FakeLoad, clock: FakeClock
) -> AsyncIterator[OperatorThread]:
    """The chart's default: one operator for every namespace."""
    settings = operator_settings("unused", namespaces=[])
    running = OperatorThread(str(api.servers[0].url), settings, load, clock)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def status(api: ApiServer, namespace: str, name: str) -> dict[str, Any]:
    found = api.find(BACKENDS, namespace, name)
    return dict((found or {}).get("status") or {})


def served(api: ApiServer, namespace: str, name: str) -> dict[str, Any] | None:
    for condition in status(api, namespace, name).get("conditions") or ():
        if condition["type"] == "Served":
            return dict(condition)
    return None


def events(api: ApiServer, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in api.live(EVENTS, namespace)
        if e["involvedObject"]["name"] == name
    ]


async def apply(client: AsyncClient, namespace: str, obj: dict[str, Any]) -> None:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = namespace
    resource: Any = ModelBackendResource
    await client.create(resource(body))


async def test_a_newcomer_in_another_namespace_is_not_served_and_says_why(
    api: ApiServer, client: AsyncClient, cluster_operator: OperatorThread
) -> None:
    """Issue 10's takeover: the release's switchyard/demo-vllm, then the example applied in
    `models` an hour later. The newcomer is NotServed, names the owner, and warns once."""
    demo = example("vllm-sim")
    await apply(client, "switchyard", demo)
    await eventually(lambda: (served(api, "switchyard", "demo-vllm") or {}).get("status") == "True")

    api.clock_offset_s = 3600
    await apply(client, "models", demo)
    condition = await eventually(
        lambda: (c := served(api, "models", "demo-vllm")) and c["status"] == "False" and c,
        what="the newcomer's Served condition",
    )
    assert condition["reason"] == "NameConflict"
    assert "served by ModelBackend switchyard/demo-vllm" in condition["message"]
    newcomer = status(api, "models", "demo-vllm")
    assert newcomer["phase"] == "NotServed"
    ready = next(c for c in newcomer["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict")
    await eventually(
        lambda: [e for e in events(api, "models", "demo-vllm") if e[1] == "NameConflict"],
        what="a NameConflict event",
    )
    # The owner is untouched.
    assert (served(api, "switchyard", "demo-vllm") or {}).get("status") == "True"
    assert status(api, "switchyard", "demo-vllm")["phase"] != "NotServed"

    # The owner goes: the next scaling pass gives the name to the newcomer.
    await client.delete(ModelBackendResource, "demo-vllm", namespace="switchyard")
    await eventually(
        lambda: (served(api, "models", "demo-vllm") or {}).get("status") == "True",
        what="the newcomer served",
    )
    assert status(api, "models", "demo-vllm")["phase"] != "NotServed"
    await eventually(
        lambda: "Served" in [e[1] for e in events(api, "models", "demo-vllm")],
        what="a Served event",
    )
    reasons = [e[1] for e in events(api, "models", "demo-vllm")]
    assert reasons.count("NameConflict") == 1  # one event, however many status writes


async def test_backends_outside_the_served_namespaces_are_not_served(
    api: ApiServer, client: AsyncClient, load: FakeLoad, clock: FakeClock
) -> None:
    settings = operator_settings("unused", namespaces=[], served_namespaces=["switchyard"])
    running = OperatorThread(str(api.servers[0].url), settings, load, clock)
    await running.start()
    try:
        await apply(client, "team-b", example("tgi-sim"))
        condition = await eventually(lambda: served(api, "team-b", "demo-tgi"))
        assert (condition["status"], condition["reason"]) == ("False", "NamespaceNotServed")
        assert status(api, "team-b", "demo-tgi")["phase"] == "NotServed"
    finally:
        await running.stop()
