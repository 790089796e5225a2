"""The keys Secret's RBAC: `auth.secret.VERBS` on that one Secret is exactly what the edge uses.

Two replicas run through the whole repertoire against the emulator (start-up read, list and
watch, a watch resumed and one re-listed after 410 Gone, admin writes with a conflict
retried, reads); every request they made is mapped to (API group, resource, verb, name,
namespace) and must be granted by a Role of `VERBS` on `resourceNames: [the Secret]` in
its namespace, and every granted verb must have been used. The chart renders exactly that
Role (tests/chart/test_chart.py, test_edge_keys_in_a_secret_through_the_api_server), as
the operator's RBAC is checked (tests/operator/test_rbac.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock
import pytest

from switchyard.edge.auth.secret import VERBS
from tests.edge.auth.cluster import NAME, NS, Cluster, emulated, replica
from tests.support.kube import RBAC_VERBS
from tests.support.polling import eventually

Use = tuple[str, str, str, str | None, str | None]  # group, resource, verb, name, namespace


def used(cluster: Cluster) -> set[Use]:
    out: set[Use] = set()
    for request in cluster.edge_requests():
        if request.resource is None or not request.resource.plural:
            continue  # API discovery (non-resource URLs): every account may
        if request.method == kmock.method.PUT and request.name is not None:
            verb = "update"
        else:
            assert request.action is not None, request
            verb = RBAC_VERBS[request.action]
        name = request.name
        if name is None:
            # resourceNames authorizes a list or watch only by this exact field selector.
            selector = request.params.get("fieldSelector")
            name = selector.removeprefix("metadata.name=") if selector else None
        out.add(
            (request.resource.group or "", request.resource.plural, verb, name, request.namespace)
        )
    return out


def granted() -> set[Use]:
    return {("", "secrets", verb, NAME, NS) for verb in VERBS}


async def test_the_edge_uses_exactly_its_role_on_the_keys_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        emulated(tmp_path) as cluster,
        replica(cluster, monkeypatch, keys_secret_watch_s=1) as a,
        replica(cluster, monkeypatch) as b,
    ):
        cluster.api.gate_reads(2)  # both read one version: one write conflicts, is retried
        made = await asyncio.gather(
            a.admin.post("/keys", json={"name": "from-a", "tenant": "t", "models": ["*"]}),
            b.admin.post("/keys", json={"name": "from-b", "tenant": "t", "models": ["*"]}),
        )
        assert [m.status_code for m in made] == [201, 201]
        assert cluster.api.conflicts == 1
        assert (await b.admin.patch("/keys/from-a", json={"disabled": True})).status_code == 200
        assert (await a.admin.get("/keys")).status_code == 200
        assert (await a.admin.delete("/keys/from-b")).status_code == 200
        await eventually(lambda: b.store.by_name("from-b") is None, what="b's watch")
        # a's watch ends every second and resumes; then its history is gone: 410, re-listed.
        watches = [r for r in cluster.edge_requests() if r.action == kmock.action.WATCH]
        await eventually(
            lambda: (
                len([r for r in cluster.edge_requests() if r.action == kmock.action.WATCH])
                > len(watches) + 1
            ),
            what="a's watch resumed",
        )
        lists = [r for r in cluster.edge_requests() if r.action == kmock.action.LIST]
        cluster.api.compact()
        cluster.api.end_watches()
        await eventually(
            lambda: (
                len([r for r in cluster.edge_requests() if r.action == kmock.action.LIST])
                >= len(lists) + 2
            ),
            what="both re-listed after 410",
        )
    calls = used(cluster)
    assert calls <= granted(), sorted(calls - granted(), key=str)
    assert granted() <= calls, sorted(granted() - calls, key=str)
