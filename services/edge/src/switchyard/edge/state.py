"""What the request pipeline works with, built once per process at start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from switchyard.edge.admission import Admission
from switchyard.edge.auth import KeyStore
from switchyard.edge.budget import Budgets, MemoryBudgets
from switchyard.edge.cache import NoCache, ResponseCache
from switchyard.edge.checks import Checks
from switchyard.edge.convert import Rules
from switchyard.edge.draining import Drain
from switchyard.edge.holding import Holds, Readiness
from switchyard.edge.images import ImageRules
from switchyard.edge.openai_responses.jobs import BackgroundJobs, NoJobs
from switchyard.edge.openai_responses.memory import MemoryResponseStore
from switchyard.edge.openai_responses.store import ResponseStore
from switchyard.edge.ratelimit import RateLimiter
from switchyard.edge.routing.endpoints import EndpointPool
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.usage import MemoryUsageStore, UsageRecorder
from switchyard.servicekit.json_schema import CheckedSchemas


@dataclass
class EdgeState:
    settings: EdgeSettings
    keys: KeyStore
    pool: EndpointPool
    limiter: RateLimiter
    admission: Admission
    #: Expensive request checks (JSON schemas, images), off the event loop.
    checks: Checks
    #: The requests running, to end when a shutdown's grace period is over.
    drain: Drain
    #: Answers to deterministic requests (`switchyard.edge.cache`); off unless configured.
    cache: ResponseCache = field(default_factory=NoCache)
    #: The Responses API's stored responses (`switchyard.edge.openai_responses`).
    responses: ResponseStore = field(
        default_factory=lambda: MemoryResponseStore(
            max_entries=1000, ttl_s=3600.0, max_bytes=1 << 22
        )
    )
    #: Background responses (`openai_responses.background.create_jobs`); none unless built.
    jobs: BackgroundJobs = field(default_factory=NoJobs)
    #: Every request's usage, counted as it ends (`switchyard.edge.usage`).
    usage: UsageRecorder = field(
        default_factory=lambda: UsageRecorder(MemoryUsageStore(retention_hours=24, max_rows=10_000))
    )
    #: Token budgets per key and tenant (`switchyard.edge.budget`).
    budgets: Budgets = field(default_factory=MemoryBudgets)
    #: Schemas found valid lately (not checked again).
    checked_schemas: CheckedSchemas = field(default_factory=CheckedSchemas)
    routes: RouteTable = field(default_factory=RouteTable)
    #: Ask for a replica of a model that has none (the cluster source; None for files).
    demand: Callable[[Route], None] | None = None
    #: Whether the routes source has its first complete view (a file: loaded; a cluster: synced).
    routes_synced: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        self.pool.on_change = self.holds.changed  # an endpoint serving may end a hold

    @cached_property
    def holds(self) -> Holds:
        """Requests held for a model with no ready replica (`switchyard.edge.holding`)."""
        s = self.settings
        return Holds(self.readiness, s.hold_max_per_model, s.hold_timeout_s)

    def readiness(self, model: str) -> Readiness:
        """The route serving `model` once a replica of it serves (what a hold waits for)."""
        route = self.routes.resolve(model)
        if route is None:
            return "gone"
        if route.waking or not self.pool.healthy(route):
            return "waiting"
        return route

    @cached_property
    def rules(self) -> Rules:
        """What requests are checked against while translated."""
        s = self.settings
        images = ImageRules(s.max_images, s.max_image_bytes, s.image_url_hosts)
        return Rules(s.schema_limits, s.max_n, images)

    def use_routes(self, table: RouteTable) -> None:
        """A routes source's new table: route to it, and open/close endpoints to match."""
        self.routes = table
        self.pool.sync(table)
        self.holds.changed()
