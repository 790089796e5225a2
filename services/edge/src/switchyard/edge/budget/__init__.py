"""Token budgets per key and per tenant, in memory or shared through Redis.

    budgets = create_budgets("redis", redis=url, zone=ZoneInfo("Europe/Paris"), ...)
    await budgets.start()
    verdict = await budgets.reserve(scopes_of(key, tenants), input_tokens, output_tokens)
    ...  # 429 insufficient_quota unless verdict.allowed; on BudgetsUnavailable, 503
    await budgets.settle(verdict.reservation, input_used, output_used)

The memory store counts per process: with several replicas (or uvicorn workers) use
Redis, or each one admits the whole budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from switchyard.edge.budget.base import (
    UTC,
    Budgets,
    BudgetsUnavailable,
    Reservation,
    Scope,
    Standing,
    Verdict,
    cost,
)
from switchyard.edge.budget.memory import MemoryBudgets
from switchyard.edge.budget.redis import FailureMode, RedisBudgets
from switchyard.edge.redis_pool import RedisConnections

if TYPE_CHECKING:
    from switchyard.edge.auth.keys import ApiKey
    from switchyard.edge.auth.keysfile import Budget

__all__ = [
    "Budgets",
    "BudgetsUnavailable",
    "MemoryBudgets",
    "RedisBudgets",
    "Reservation",
    "Scope",
    "Standing",
    "Verdict",
    "cost",
    "create_budgets",
    "scopes_of",
]


def scopes_of(key: ApiKey, tenants: Mapping[str, Budget]) -> tuple[Scope, ...]:
    """The budgets a request of `key` is charged to: its own, then its tenant's."""
    scopes: list[Scope] = []
    if key.budget is not None:
        scopes.append(Scope("key", key.tenant, key.name, key.budget))
    tenant = tenants.get(key.tenant)
    if tenant is not None:
        scopes.append(Scope("tenant", key.tenant, key.tenant, tenant))
    return tuple(scopes)


def create_budgets(
    backend: Literal["memory", "redis"],
    *,
    redis: str | RedisConnections | None,
    zone: ZoneInfo = UTC,
    failure_mode: FailureMode = "closed",
    timeout_s: float = 0.25,
    connect_timeout_s: float = 2.0,
    pool_timeout_s: float = 5.0,
    max_connections: int = 64,
) -> Budgets:
    """The budget store for the edge's settings (`redis`, a URL or a shared pool, and the
    Redis options only matter for "redis")."""
    if backend == "memory":
        return MemoryBudgets(zone=zone)
    if backend == "redis":
        if not redis:
            raise ValueError("the redis budget backend needs a Redis URL")
        return RedisBudgets(
            redis,
            zone=zone,
            failure_mode=failure_mode,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
            max_connections=max_connections,
        )
    raise ValueError(f"unknown budget backend {backend!r}")
