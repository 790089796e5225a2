"""The route table: model names and aliases → engine kind and adapter endpoints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


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

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


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
