"""What every rate limiter takes and answers, whichever store keeps its state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

#: The largest per-period allowance a limit may have. It keeps every level the GCRA
#: computes below 2**53, the range in which Redis's Lua numbers (doubles) are exact.
MAX_LIMIT = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's limits per period (a minute in production); None means unlimited."""

    rpm: int | None
    tpm: int | None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_LIMIT:
                raise ValueError(
                    f"{name} must be None (unlimited) or between 1 and {MAX_LIMIT}, not {value!r}"
                )


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one `acquire`, with what the `x-ratelimit-*` headers need.

    `remaining_*` and `reset_*_s` describe the state after this request's charge (or,
    when refused, without it); `reset_*_s` is the time until the limit is back to its
    full allowance. All three fields of a limit are None when that limit is unlimited,
    and `remaining_*`/`reset_*_s` are None when no store was asked (a too-large request
    refused while Redis is away). In fail-open mode without Redis, they (and `limit_*`)
    are those of this process's fallback share.
    """

    allowed: bool
    #: 0 when allowed; else the seconds after which the same request can succeed.
    #: Also 0 when `too_large`: no wait helps.
    retry_after_s: float
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_s: float | None
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_s: float | None
    #: The request alone needs more tokens than the TPM limit: never admissible.
    too_large: bool = False


UNLIMITED = Decision(True, 0.0, None, None, None, None, None, None)


class LimiterUnavailable(Exception):
    """The shared store cannot be reached and the policy is fail-closed (answer 503)."""

    def __init__(self, message: str = "rate-limit store unavailable", retry_after_s: float = 1.0):
        super().__init__(message)
        #: A suggested Retry-After for the 503: the store is usually back within seconds.
        self.retry_after_s = retry_after_s


class RateLimiter(ABC):
    """Per-subject (per API key) request and token limits."""

    @abstractmethod
    async def acquire(self, subject: str, limits: Limits, tokens: int) -> Decision:
        """Atomically check both limits for one request costing `tokens`, and charge
        both only if both pass (all-or-nothing); a refusal charges nothing."""

    @abstractmethod
    async def settle(self, subject: str, limits: Limits, reserved: int, used: int) -> None:
        """Correct the token charge of an admitted request by `used - reserved`: refund
        when negative, charge the extra unconditionally when positive (it was consumed,
        so it may put the key in debt). Never raises for a store failure."""

    async def start(self) -> None:  # noqa: B027  # optional: most stores need nothing
        """Get ready before the first request (open the store's connections)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the store's resources."""
