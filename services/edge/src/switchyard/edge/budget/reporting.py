"""The budgets' Prometheus counters (labels bounded: tenants come from the keys file)."""

from __future__ import annotations

from prometheus_client import Counter

REFUSALS = Counter(
    "switchyard_edge_budget_refusals",
    "Requests refused because a token budget was spent, by tenant and by whose budget "
    "(key or tenant).",
    ("tenant", "scope"),
)
STORE_ERRORS = Counter(
    "switchyard_edge_budget_store_errors",
    "Budget store calls that failed (unreachable, timed out, refused), by operation.",
    ("operation",),
)
