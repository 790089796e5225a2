"""The route table: model names and aliases → engine kind and adapter endpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

#: The longest Retry-After to send. The openai SDK honours one of up to 120 s and does not
#: retry at all past that (3.x `_base_client.py`: `_calculate_retry_timeout`, `_should_retry`,
#: MAX_RETRY_AFTER_DELAY); older 1.x releases honour up to 60 s and back off briefly beyond.
MAX_RETRY_AFTER_S: Final = 60

#: How a route picks among its endpoints (`routing.affinity`): `load`, power of two choices
#: by requests in flight; `prefix`, consistent hashing (with bounded loads) of the prompt's
#: opening, so a conversation stays where its KV cache is; `session`, the same of the
#: client's session id (header or `user`), or of the prompt when it sends none.
Policy = Literal["load", "prefix", "session"]
POLICIES: Final[tuple[Policy, ...]] = ("load", "prefix", "session")


@dataclass(frozen=True, slots=True)
class Route:
    """One served model. `name` is what the adapters serve; clients may also send an alias."""

    name: str
    engine: str
    endpoints: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    #: The backend exists but has no ready replica yet (scaled to zero or loading): the edge
    #: answers 503 with Retry-After instead of queueing (Kubernetes source only).
    waking: bool = False
    #: How long the backend's last wake from zero took (status.lastWakeSeconds), and since
    #: when (epoch seconds) the one under way runs (status.wakingSince): the operator's.
    last_wake_s: int | None = None
    waking_since: float | None = None
    policy: Policy = "load"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def wake_retry_after_s(self, default_s: int, now: float | None = None) -> int:
        """Retry-After for a request that finds this route waking: the expected rest of the
        wake (as long as the last one took, less what has passed), `default_s` when no wake
        was ever measured; at least 1 s, at most what the SDK honours."""
        if self.last_wake_s is None:
            expected = float(default_s)
        elif self.waking_since is None:  # the operator has not scaled up yet
            expected = float(self.last_wake_s)
        else:
            elapsed = (time.time() if now is None else now) - self.waking_since
            expected = self.last_wake_s - max(elapsed, 0.0)
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(expected)))


class RouteTable:
    """An immutable snapshot; sources build a new one on every change."""

    __slots__ = ("_by_name", "routes")

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes = tuple(sorted(routes, key=lambda r: r.name))
        self._by_name: dict[str, Route] = {}
        for route in self.routes:
            for name in route.names:
                other = self._by_name.get(name)
                if other is not None:
                    raise ValueError(
                        f"model name {name!r} is used by both {other.name!r} and {route.name!r}"
                    )
                self._by_name[name] = route

    def resolve(self, model: str) -> Route | None:
        return self._by_name.get(model)

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(e for r in self.routes for e in r.endpoints)

    def __len__(self) -> int:
        return len(self.routes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteTable) and self.routes == other.routes

    def __hash__(self) -> int:
        return hash(self.routes)
