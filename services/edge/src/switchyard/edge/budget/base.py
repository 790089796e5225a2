"""What every budget store takes and answers: reserve before a request runs, settle after.

A request's budgets are its key's and its tenant's (either may be absent). `reserve`
charges the most the request may use to all of them together, or to none: a request
refused by one budget charges nothing to the other. `settle` corrects each charge with
the real usage once the request has ended, in the period it was charged to (a request
that straddles a reset is settled in the period it began in; once that period is over
its correction is dropped: the period's tokens no longer matter).

Tokens are weighed: a budget's cost for a request is
`ceil(input_tokens * input_weight + output_tokens * output_weight)`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from switchyard.edge.budget.period import Period, Window
from switchyard.edge.budget.reporting import REFUSALS

if TYPE_CHECKING:
    from switchyard.edge.auth.keysfile import Budget

Kind = Literal["key", "tenant"]
UTC = ZoneInfo("UTC")


def cost(budget: Budget, input_tokens: int, output_tokens: int) -> int:
    """The weighed tokens `budget` is charged (rounded to 1e-6 first, so that float
    noise such as 100 * 1.1 = 110.00000000000001 does not cost a token)."""
    weighed = input_tokens * budget.input_weight + output_tokens * budget.output_weight
    return math.ceil(round(weighed, 6))


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget that applies to a request: its key's or its tenant's."""

    kind: Kind
    tenant: str
    #: The key's name, or the tenant's.
    name: str
    budget: Budget

    @property
    def period(self) -> Period:
        return Period(self.budget.period)


@dataclass(frozen=True, slots=True)
class Part:
    """One budget's charge in a reservation: in which window, how many weighed tokens."""

    scope: Scope
    window: Window
    tokens: int


@dataclass(frozen=True, slots=True)
class Standing:
    """A budget as a reserve left it (with the charge when allowed, without when refused)."""

    scope: Scope
    spent: int
    #: When it next gets tokens back (ms since the epoch).
    reset_ms: int
    #: What this request would have cost it.
    cost: int

    @property
    def remaining(self) -> int:
        return max(self.scope.budget.tokens - self.spent, 0)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an admitted request holds until `settle`."""

    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one `reserve`. `standings` is empty when no budget applies or the
    store could not be asked (fail-open)."""

    allowed: bool
    standings: tuple[Standing, ...] = ()
    #: Held until the request ends (None: nothing was charged).
    reservation: Reservation | None = None

    @property
    def refused_by(self) -> Standing | None:
        """The budget that refused (the key's before its tenant's)."""
        if self.allowed:
            return None
        return next(s for s in self.standings if s.spent + max(s.cost, 1) > s.scope.budget.tokens)

    @property
    def tightest(self) -> Standing | None:
        """The budget with the fewest tokens left (the key's on a tie): what headers show."""
        return min(self.standings, key=lambda s: s.remaining, default=None)


ALLOWED = Verdict(True)


def admits(spent: int, cost: int, limit: int) -> bool:
    """A charge fits when it keeps the budget within its tokens; a spent budget refuses
    even a request costing nothing (a cache hit), as the stores do."""
    return spent + max(cost, 1) <= limit


class BudgetsUnavailable(Exception):
    """The shared store cannot be reached and the policy is fail-closed (answer 503)."""

    def __init__(self, message: str = "budget store unavailable", retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Budgets(ABC):
    """Token budgets per key and tenant, periods counted in `zone`."""

    def __init__(self, *, zone: ZoneInfo = UTC, clock: Callable[[], float] = time.time) -> None:
        """`clock`: wall-clock seconds since the epoch (calendar periods follow it); tests
        inject their own."""
        self.zone = zone
        self._clock = clock

    def now(self) -> float:
        """The budgets' clock (seconds since the epoch)."""
        return self._clock()

    async def reserve(
        self, scopes: Sequence[Scope], input_tokens: int, output_tokens: int
    ) -> Verdict:
        """Charge every one of `scopes` the request's weighed cost, all or none."""
        if not scopes:
            return ALLOWED
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("tokens must be >= 0")
        now = self._clock()
        parts = tuple(
            Part(s, s.period.window(now, self.zone), cost(s.budget, input_tokens, output_tokens))
            for s in scopes
        )
        found = await self._reserve(parts)
        if found is None:  # the store is away and the policy is fail-open
            return ALLOWED
        allowed, states = found
        standings = tuple(
            Standing(p.scope, spent, p.window.reset_ms(oldest), p.tokens)
            for p, (spent, oldest) in zip(parts, states, strict=True)
        )
        verdict = Verdict(allowed, standings, Reservation(parts) if allowed else None)
        refused = verdict.refused_by
        if refused is not None:
            REFUSALS.labels(refused.scope.tenant, refused.scope.kind).inc()
        return verdict

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        """Correct each charge of `reservation` with the real usage. Never raises for a
        store failure (the response is already out)."""
        now = self._clock()
        corrections = []
        for part in reservation.parts:
            delta = cost(part.scope.budget, input_tokens, output_tokens) - part.tokens
            window = part.scope.period.window(now, self.zone)
            # The period it was charged in is over: its tokens no longer count.
            if delta and window.counts(part.window.bucket):
                corrections.append((part, window, delta))
        if corrections:
            await self._settle(corrections)

    async def start(self) -> None:  # noqa: B027  # optional: memory needs nothing
        """Get ready before the first request (open the store's connections)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the store's resources."""

    @abstractmethod
    async def _reserve(
        self, parts: Sequence[Part]
    ) -> tuple[bool, list[tuple[int, int | None]]] | None:
        """Check and charge atomically: whether allowed, and each budget's (spent, oldest
        bucket still holding tokens) after the charge, or without it when refused. None
        when the store is away and the request goes through unchecked."""

    @abstractmethod
    async def _settle(self, corrections: Sequence[tuple[Part, Window, int]]) -> None:
        """Add each `delta` to the bucket its part was charged in (`Window`: now's)."""
