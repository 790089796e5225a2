"""Who serves a model name: the first ModelBackend to claim it keeps it.

Every ModelBackend claims its served name (spec.servedModelName, else metadata.name) and its
aliases. The claims are taken in order of metadata.creationTimestamp, ties broken by
(namespace, name); a backend whose names are all free gets them, one with any name already
taken gets none (a backend is served whole or not at all). So a newcomer, in any namespace,
never takes a name over, and when the owner goes the next claimant in line gets it.

The edge applies the same rule (`switchyard.edge.routing.kubernetes_source`); change both
together. Only backends in the namespaces the edge serves claim names (`served` below).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from switchyard.engines import ENGINES


@dataclass(frozen=True, slots=True)
class Claim:
    namespace: str
    name: str
    #: metadata.creationTimestamp as epoch seconds (unknown: after every known one).
    created: float
    names: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def order(self) -> tuple[float, str, str]:
        return (self.created, self.namespace, self.name)


def _created(raw: object) -> float:
    if not isinstance(raw, str):
        return math.inf
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.inf


def claim_of(backend: Mapping[str, Any]) -> Claim | None:
    """The names a ModelBackend object claims (None: it claims none)."""
    meta = backend.get("metadata") or {}
    spec = backend.get("spec") or {}
    # An engine the edge does not route to (none in the registry) claims nothing.
    if spec.get("engine") not in ENGINES or meta.get("deletionTimestamp"):
        return None
    served = spec.get("servedModelName") or meta.get("name") or ""
    names = tuple(dict.fromkeys([served, *(spec.get("aliases") or ())]))
    return Claim(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        created=_created(meta.get("creationTimestamp")),
        names=names,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    served: bool
    #: Served, NameConflict or NamespaceNotServed.
    reason: str
    message: str


class Claims:
    """The owners of every claimed name, from one listing of the ModelBackends."""

    def __init__(self, claims: Iterable[Claim], served: Collection[str] = ()) -> None:
        #: Namespaces whose backends may serve names (empty: all).
        self._served = frozenset(served)
        self._claims = {(c.namespace, c.name): c for c in claims if self.may_serve(c)}
        self.owners: dict[str, Claim] = {}
        self.losers: dict[tuple[str, str], tuple[str, Claim]] = {}
        for claim in sorted(self._claims.values(), key=Claim.order):
            taken = [n for n in claim.names if n in self.owners]
            if taken:
                self.losers[(claim.namespace, claim.name)] = (taken[0], self.owners[taken[0]])
            else:
                self.owners.update(dict.fromkeys(claim.names, claim))

    @classmethod
    def of(cls, backends: Iterable[Mapping[str, Any]], served: Collection[str] = ()) -> Claims:
        return cls((c for b in backends if (c := claim_of(b)) is not None), served)

    def may_serve(self, claim: Claim) -> bool:
        return not self._served or claim.namespace in self._served

    def verdict(self, backend: Mapping[str, Any]) -> Verdict:
        """Whether the edge serves `backend`'s names, and why not."""
        claim = claim_of(backend)
        if claim is None:
            return Verdict(False, "NoEngine", "the edge routes no model to this engine")
        if not self.may_serve(claim):
            allowed = ", ".join(sorted(self._served))
            return Verdict(
                False,
                "NamespaceNotServed",
                f"the edge serves model names only from the namespaces {allowed}",
            )
        key = (claim.namespace, claim.name)
        if self._claims.get(key) != claim:  # not (or not so) in the listing: judge it with it
            others = [c for k, c in self._claims.items() if k != key]
            return Claims([*others, claim], self._served).verdict(backend)
        lost = self.losers.get(key)
        if lost is not None:
            name, owner = lost
            return Verdict(
                False,
                "NameConflict",
                f"model name {name!r} is served by ModelBackend {owner.ref}, which claimed it "
                "first; rename this backend's servedModelName or aliases, or delete the other",
            )
        names = ", ".join(claim.names)
        return Verdict(True, "Served", f"the edge routes {names} to this backend")
