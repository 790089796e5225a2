"""Who serves a model name: the first claimant, in the operator and in the edge alike."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.edge.routing.kubernetes_source import assign_names, backend_of
from switchyard.operator.claims import Claims


def mb(
    namespace: str,
    name: str,
    created: str | None = "2026-12-01T12:00:00Z",
    *,
    engine: str = "vllm",
    served: str | None = None,
    aliases: tuple[str, ...] = (),
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if created is not None:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T13:00:00Z"
    spec: dict[str, Any] = {"engine": engine, "model": "m", "aliases": list(aliases)}
    if served is not None:
        spec["servedModelName"] = served
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "ModelBackend",
            "metadata": meta, "spec": spec}  # fmt: skip


EARLY, LATE = "2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z"

#: Scenario → the backends, and the owner ("namespace/name") of each name that is served.
SCENARIOS: dict[str, tuple[list[dict[str, Any]], dict[str, str]]] = {
    "a newcomer in a namespace that sorts first": (
        [mb("switchyard", "demo-vllm", EARLY), mb("models", "demo-vllm", LATE)],
        {"demo-vllm": "switchyard/demo-vllm"},
    ),
    "equal times: namespace, then name": (
        [
            mb("b", "x", EARLY, served="m"),
            mb("a", "y", EARLY, served="m"),
            mb("a", "x", EARLY, served="m"),
        ],
        {"m": "a/x"},
    ),
    "an alias taken loses the whole backend": (
        [
            mb("ns", "old", EARLY, aliases=("shared",)),
            mb("ns", "new", LATE, aliases=("shared", "own")),
        ],
        {"old": "ns/old", "shared": "ns/old"},
    ),
    "a loser's other names stay free for later claimants": (
        [
            mb("ns", "a", EARLY, served="x"),
            mb("ns", "b", "2026-12-01T12:30:00Z", served="x", aliases=("y",)),
            mb("ns", "c", LATE, served="y"),
        ],
        {"x": "ns/a", "y": "ns/c"},
    ),
    "no creation time: after every known one": (
        [mb("a", "first", None, served="m"), mb("z", "second", LATE, served="m")],
        {"m": "z/second"},
    ),
    "an engine the edge does not route claims nothing": (
        [mb("a", "x", EARLY, engine="ollama", served="m"), mb("b", "y", LATE, served="m")],
        {"m": "b/y"},
    ),
    "a backend being deleted claims nothing": (
        [mb("a", "x", EARLY, served="m", deleting=True), mb("b", "y", LATE, served="m")],
        {"m": "b/y"},
    ),
    "the served name among the aliases": (
        [mb("a", "x", EARLY, served="m", aliases=("m", "n", "n"))],
        {"m": "a/x", "n": "a/x"},
    ),
}


def operator_owners(backends: list[dict[str, Any]]) -> dict[str, str]:
    return {name: claim.ref for name, claim in Claims.of(backends).owners.items()}


def edge_owners(backends: list[dict[str, Any]]) -> dict[str, str]:
    parsed = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): found
        for b in backends
        if (found := backend_of(b)) is not None
    }
    owners, _ = assign_names(parsed)
    return {name: f"{key[0]}/{key[1]}" for name, key in owners.items()}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_operator_and_the_edge_give_each_name_the_same_owner(scenario: str) -> None:
    backends, expected = SCENARIOS[scenario]
    assert operator_owners(backends) == expected
    assert edge_owners(backends) == expected
    assert edge_owners(list(reversed(backends))) == expected  # listing order does not matter


def test_the_loser_is_told_who_owns_the_name() -> None:
    backends = [mb("switchyard", "demo-vllm", EARLY), mb("models", "demo-vllm", LATE)]
    claims = Claims.of(backends)
    verdict = claims.verdict(backends[1])
    assert (verdict.served, verdict.reason) == (False, "NameConflict")
    assert "'demo-vllm' is served by ModelBackend switchyard/demo-vllm" in verdict.message
    owner = claims.verdict(backends[0])
    assert (owner.served, owner.reason) == (True, "Served")
    assert owner.message == "the edge routes demo-vllm to this backend"


def test_a_backend_missing_from_the_listing_is_judged_with_it() -> None:
    """A reconcile that lists before the API server shows the backend itself."""
    older = mb("b", "old", EARLY, served="m")
    newer = mb("a", "new", LATE, served="m")
    assert not Claims.of([older]).verdict(newer).served
    assert Claims.of([newer]).verdict(older).served  # it was there first


def test_only_the_served_namespaces_claim_names() -> None:
    backends = [mb("team-b", "x", EARLY, served="m"), mb("team-a", "y", LATE, served="m")]
    claims = Claims.of(backends, served=["team-a"])
    assert claims.verdict(backends[1]).served
    outside = claims.verdict(backends[0])
    assert (outside.served, outside.reason) == (False, "NamespaceNotServed")
    assert "team-a" in outside.message
