"""The operator's RBAC: `rbac.RULES` is exactly what it uses.

The operator runs through its whole repertoire against the emulator (create, status, scale,
a deleted Deployment, events, the real gRPC load source listing pods); every request it made
is mapped to (API group, resource, verb) and must be allowed by RULES, and every rule's verb
must have been used. The chart's Role is asserted against RULES.
"""

from __future__ import annotations

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from switchyard.operator import rbac
from switchyard.operator.kube import ModelBackendResource
from tests.operator.apiserver import ApiServer
from tests.operator.harness import (
    NAMESPACE,
    FakeClock,
    OperatorThread,
    eventually,
    example,
    operator_settings,
)
from tests.operator.steps import children_of, create, set_deployment_status, settled
from tests.support.kube import RBAC_VERBS


def used(api: ApiServer, port: int) -> set[tuple[str, str, str]]:
    out = set()
    for request in list(api):
        if request.url.port != port or request.resource is None or not request.resource.plural:
            continue  # another client, or API discovery (non-resource URLs)
        resource = request.resource.plural
        if request.subresource:
            resource = f"{resource}/{request.subresource}"
        assert request.action is not None, request
        out.add((request.resource.group or "", resource, RBAC_VERBS[request.action]))
    return out


def granted() -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rbac.RULES
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    }


def test_rules_render_as_a_role() -> None:
    for rule in rbac.RULES + rbac.PEERING_RULES:
        as_dict = rule.as_dict()
        assert set(as_dict) == {"apiGroups", "resources", "verbs"}
        assert set(as_dict["verbs"]) <= {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "update",
            "delete",
        }
    assert rbac.allowed("apps", "deployments", "patch")
    assert not rbac.allowed("apps", "deployments", "delete")
    assert not rbac.allowed("kopf.dev", "kopfpeerings", "list")
    assert rbac.allowed("kopf.dev", "kopfpeerings", "list", peering=True)


async def test_the_operator_uses_exactly_its_rules(
    api: ApiServer, client: AsyncClient, clock: FakeClock
) -> None:
    url = str(api.servers[0].url)
    running = OperatorThread(url, operator_settings(NAMESPACE), None, clock)
    await running.start()
    try:
        await create(client, example("vllm-sim"))
        await settled(api, "demo-vllm", "Loading")
        await set_deployment_status(client, "demo-vllm", replicas=1, readyReplicas=1)
        await settled(api, "demo-vllm", "Ready")
        await client.patch(
            ModelBackendResource, "demo-vllm", {"spec": {"scaling": {"minReplicas": 2, "maxReplicas": 3}}},
            namespace=NAMESPACE, patch_type=PatchType.MERGE,
        )  # fmt: skip
        await eventually(lambda: children_of(api)["deployments"][0]["spec"]["replicas"] == 2)
        # The scaler asks the adapters: a ready pod's adapter does not answer; it holds.
        await client.delete(Deployment, "demo-vllm", namespace=NAMESPACE)
        await eventually(lambda: children_of(api)["deployments"], what="recreated")
        await client.delete(ModelBackendResource, "demo-vllm", namespace=NAMESPACE)
        await eventually(lambda: children_of(api)["deployments"] == [])
    finally:
        await running.stop()
    calls = used(api, api.servers[0].port)
    assert calls <= granted(), sorted(calls - granted())
    assert granted() <= calls, sorted(granted() - calls)
