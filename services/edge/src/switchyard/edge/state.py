"""What the request pipeline works with, built once per process at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.edge.admission import Admission
from switchyard.edge.auth import KeyStore
from switchyard.edge.ratelimit import RateLimiter
from switchyard.edge.routing.endpoints import EndpointPool
from switchyard.edge.routing.table import RouteTable
from switchyard.edge.settings import EdgeSettings


@dataclass
class EdgeState:
    settings: EdgeSettings
    keys: KeyStore
    pool: EndpointPool
    limiter: RateLimiter
    admission: Admission
    routes: RouteTable = field(default_factory=RouteTable)

    def use_routes(self, table: RouteTable) -> None:
        """A routes source's new table: route to it, and open/close endpoints to match."""
        self.routes = table
        self.pool.sync(table)
