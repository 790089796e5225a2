"""Budgets shared by every edge replica through one Redis, checked and charged atomically.

One Lua script (`budget.lua`) tidies, checks and charges a request's key budget and its
tenant's in a single round trip, so replicas can never over-admit between a read and a
write, and a request refused by one budget charges neither. Both hashes carry the tenant
as their hash tag (`{tenant}`), so the script also runs on Redis Cluster. The buckets
come from the edge's clock, not Redis's (`period`: calendar periods are wall-clock time
in the configured zone); each hash expires once its window has passed (plus a grace for
replicas' clocks), so past periods leave nothing behind.

When Redis cannot be reached or answers too late: "closed" raises `BudgetsUnavailable`
(the edge answers 503); "open" lets the request through unchecked and uncharged (a
warning, rate-limited, and a counter say so). There is no in-memory fallback share as
the rate limiter has: a budget spans days, so a share started from zero would say
nothing about what was already spent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, Literal
from zoneinfo import ZoneInfo

import structlog
from redis.exceptions import NoScriptError

from switchyard.edge.budget.base import UTC, Budgets, BudgetsUnavailable, Part
from switchyard.edge.budget.period import Window
from switchyard.edge.budget.reporting import STORE_ERRORS
from switchyard.edge.ratelimit.reporting import LogThrottle
from switchyard.edge.redis_pool import STORE_ERRORS as REDIS_ERRORS
from switchyard.edge.redis_pool import RedisConnections, connections_for

FailureMode = Literal["closed", "open"]

SCRIPT = (files("switchyard.edge.budget") / "budget.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
#: How long a hash outlives its window: replicas' clocks may disagree by this much.
GRACE_MS = 300_000


class RedisBudgets(Budgets):
    def __init__(
        self,
        redis: str | RedisConnections,
        *,
        zone: ZoneInfo = UTC,
        clock: Callable[[], float] = time.time,
        failure_mode: FailureMode = "closed",
        key_prefix: str = "switchyard:budget",
        timeout_s: float = 0.25,
        connect_timeout_s: float = 2.0,
        pool_timeout_s: float = 5.0,
        max_connections: int = 64,
        warn_interval_s: float = 10.0,
    ) -> None:
        super().__init__(zone=zone, clock=clock)
        if failure_mode not in ("closed", "open"):
            raise ValueError(f"failure_mode must be 'closed' or 'open', not {failure_mode!r}")
        self._failure_mode = failure_mode
        self._prefix = key_prefix
        self._connections = connections_for(
            redis,
            max_connections=max_connections,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self._redis = self._connections.client
        self._warnings = LogThrottle(warn_interval_s)

    def hash_name(self, part: Part) -> str:
        """`<prefix>:{<tenant>}:key:<name>:<period>` or `<prefix>:{<tenant>}:tenant:<period>`:
        the tenant is the hash tag; the period is in the name so that a period changed in
        the keys file starts afresh."""
        s = part.scope
        who = f"key:{s.name}" if s.kind == "key" else "tenant"
        return f"{self._prefix}:{{{s.tenant}}}:{who}:{s.budget.period}"

    async def start(self) -> None:
        """Open the pool's connections and load the script; a Redis that cannot be reached
        now is no reason not to start (connections open on demand)."""
        errors = await self._connections.warm()
        try:
            if not errors:
                await self._connections.load_script(SCRIPT)
        except REDIS_ERRORS as exc:
            errors.append(exc)
        if errors:
            structlog.get_logger(__name__).warning(
                "budget_store_not_warmed",
                opened=self._connections.max_connections - len(errors),
                error=f"{type(errors[0]).__name__}: {errors[0]}",
                hint="connections will be opened on demand",
            )

    async def _reserve(
        self, parts: Sequence[Part]
    ) -> tuple[bool, list[tuple[int, int | None]]] | None:
        now_ms = round(self._clock() * 1000)
        args: list[str | int] = ["reserve"]
        for p in parts:
            w = p.window
            ttl = w.expires_ms() - now_ms + GRACE_MS
            args += [p.scope.budget.tokens, w.bucket, w.span, p.tokens, ttl]
        try:
            reply = await self._eval([self.hash_name(p) for p in parts], args)
        except REDIS_ERRORS as exc:
            self._failed("reserve", exc)
            if self._failure_mode == "closed":
                raise BudgetsUnavailable() from exc
            return None
        states = [
            (int(reply[1 + 2 * i]), None if int(reply[2 + 2 * i]) < 0 else int(reply[2 + 2 * i]))
            for i in range(len(parts))
        ]
        return int(reply[0]) == 1, states

    async def _settle(self, corrections: Sequence[tuple[Part, Window, int]]) -> None:
        now_ms = round(self._clock() * 1000)
        args: list[str | int] = ["settle"]
        for part, window, delta in corrections:
            ttl = window.expires_ms() - now_ms + GRACE_MS
            args += [part.window.bucket, window.bucket, window.span, delta, ttl]
        try:
            await self._eval([self.hash_name(p) for p, _, _ in corrections], args)
        except Exception as exc:  # the response is already out: never fail the caller
            self._failed("settle", exc)

    async def aclose(self) -> None:
        await self._connections.close()

    async def _eval(self, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await self._redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or flushed Redis, or a promoted replica, lacks the script: EVAL
            # runs it and caches it there (one round trip, once per server).
            return await self._redis.eval(SCRIPT, len(keys), *keys, *args)

    def _failed(self, operation: str, exc: Exception) -> None:
        STORE_ERRORS.labels(operation=operation).inc()
        suppressed = self._warnings.take()
        if suppressed is not None:
            structlog.get_logger(__name__).warning(
                "budget_store_unavailable",
                operation=operation,
                failure_mode=self._failure_mode,
                error=f"{type(exc).__name__}: {exc}",
                suppressed_since_last=suppressed,
            )
