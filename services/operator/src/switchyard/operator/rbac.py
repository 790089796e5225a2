"""The Kubernetes permissions the operator uses: the chart's ClusterRole (or Role) must grant
exactly these. Tests check every API call the operator makes against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from switchyard.operator import api


@dataclass(frozen=True, slots=True)
class PolicyRule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }

    def allows(self, group: str, resource: str, verb: str) -> bool:
        return group in self.api_groups and resource in self.resources and verb in self.verbs


RULES: Final[tuple[PolicyRule, ...]] = (
    # kopf watches ModelBackends and keeps its bookkeeping in their annotations; the
    # handlers and the scaler read them fresh.
    PolicyRule((api.GROUP,), (api.PLURAL,), ("get", "list", "watch", "patch")),
    # The status is written by the operator only.
    PolicyRule((api.GROUP,), (f"{api.PLURAL}/status",), ("patch",)),
    # The engine Deployments: server-side apply (patch), create where apply cannot, scale
    # (patch), read, and watch for their status.
    PolicyRule(("apps",), ("deployments",), ("get", "list", "watch", "create", "patch")),
    PolicyRule(("",), ("services",), ("create", "patch")),
    PolicyRule(("policy",), ("poddisruptionbudgets",), ("create", "patch")),
    # The load source finds the ready pods and their IPs to ask their adapters.
    PolicyRule(("",), ("pods",), ("list",)),
    # kopf posts Events (core/v1) about what the operator did.
    PolicyRule(("",), ("events",), ("create",)),
)

#: Only with OPERATOR_PEERING set (kopf's leader election; needs kopf's peering CRDs).
PEERING_RULES: Final[tuple[PolicyRule, ...]] = (
    PolicyRule(
        ("kopf.dev",),
        ("kopfpeerings", "clusterkopfpeerings"),
        ("get", "list", "watch", "patch"),
    ),
)


def allowed(group: str, resource: str, verb: str, *, peering: bool = False) -> bool:
    rules = RULES + (PEERING_RULES if peering else ())
    return any(rule.allows(group, resource, verb) for rule in rules)
