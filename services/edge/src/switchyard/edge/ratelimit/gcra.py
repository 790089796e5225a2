"""GCRA (generic cell rate algorithm): the rate-limit arithmetic both stores share.

A limit of L per period P is a token bucket that holds L and refills continuously.
GCRA keeps a single instant per subject and limit instead of a count per window: the
*theoretical arrival time* (TAT), the moment the bucket will be full again. Each unit of
cost pushes the TAT P/L (the emission interval) into the future; a request costing n is
admitted iff, after charging it, the TAT is at most one period ahead of now (the burst is
the whole allowance). So it is O(1), keeps no per-request history, and gives exact
answers: remaining = how many emission intervals still fit before now + P, retry-after =
how far the TAT overshoots now + P, reset = TAT - now. A refund moves the TAT back (never
before now); an extra charge moves it forward unconditionally (debt).

To stay exact in integers (Redis's Lua has only doubles, exact below 2**53) the TAT is
written as the pair (`level`, `at`): TAT = at + level / L, with `at` and the TAT in ms. A unit of cost adds P (ms) to the level, each elapsed ms drains L, and the bucket
holds L * P. In these units:

    admit cost n      iff  level + n*P <= L*P
    remaining          =   L - ceil(level / P)
    reset (ms)         =   level / L                  (both rounded up to whole ms,
    retry-after (ms)   =   (level + n*P - L*P) / L     the clocks' resolution)

`level / P` is the outstanding cost, independent of L, so a limit changed in the
configuration keeps the usage already charged. The Lua script (`gcra.lua`) is a
transliteration of the functions below; `decide` turns either store's levels into the
`Decision`.
"""

from __future__ import annotations

from switchyard.edge.ratelimit.base import Decision, Limits

#: An extra charge can put a key at most this many periods in debt; beyond it the debt
#: is forgiven. It bounds every level (see `MAX_LIMIT`) and every key's lifetime.
MAX_DEBT_PERIODS = 100

#: The longest period: `MAX_LIMIT * MAX_PERIOD_MS * MAX_DEBT_PERIODS` stays below 2**53.
MAX_PERIOD_MS = 60_000


def period_ms(period_s: float) -> int:
    """The period in whole milliseconds, checked against the exactness bound."""
    ms = round(period_s * 1000)
    if not 1 <= ms <= MAX_PERIOD_MS:
        raise ValueError(f"period_s must be between 0.001 and {MAX_PERIOD_MS // 1000}")
    return ms


def drain(level: int, at: int, now: int, limit: int) -> int:
    """The level written at `at`, drained by `limit` per elapsed ms until `now`."""
    elapsed = now - at
    # A clock that went back (a failover to another server) drains nothing.
    if elapsed > 0:
        level -= elapsed * limit
        if level < 0:
            return 0
    return level


def admits(level: int, cost: int, period: int, limit: int) -> bool:
    return level + cost * period <= limit * period


def debt_cap(period: int, limit: int) -> int:
    return MAX_DEBT_PERIODS * period * limit


def without_store(limits: Limits, tokens: int) -> Decision:
    """The answer when the store cannot be asked (fail-open): admitted unless too
    large, limits known, remaining and reset unknown."""
    tpm = limits.tpm
    too_large = tpm is not None and tokens > tpm
    return Decision(
        allowed=not too_large,
        retry_after_s=0.0,
        limit_requests=limits.rpm,
        remaining_requests=None,
        reset_requests_s=None,
        limit_tokens=tpm,
        remaining_tokens=None,
        reset_tokens_s=None,
        too_large=too_large,
    )


def decide(
    limits: Limits, tokens: int, period: int, allowed: bool, requests: int, token_level: int
) -> Decision:
    """The `Decision` for levels after the charge (allowed) or without it (refused).

    `requests` and `token_level` are ignored for an unlimited limit.
    """
    rpm, tpm = limits.rpm, limits.tpm
    # Whole ms, rounded up: the clocks tick in ms, so a retry after `retry_after_s`
    # succeeds, and one any earlier would not.
    retry_ms = 0
    remaining_requests = remaining_tokens = None
    reset_requests = reset_tokens = None
    if rpm is not None:
        remaining_requests = max(0, rpm + (-requests // period))  # rpm - ceil(level/P)
        reset_requests = -(-requests // rpm) / 1000
        if not allowed:
            retry_ms = max(retry_ms, -((rpm * period - requests - period) // rpm))
    too_large = False
    if tpm is not None:
        remaining_tokens = max(0, tpm + (-token_level // period))
        reset_tokens = -(-token_level // tpm) / 1000
        too_large = tokens > tpm
        if not allowed:
            retry_ms = max(retry_ms, -((tpm * period - token_level - tokens * period) // tpm))
    return Decision(
        allowed=allowed,
        retry_after_s=0.0 if too_large else retry_ms / 1000,
        limit_requests=rpm,
        remaining_requests=remaining_requests,
        reset_requests_s=reset_requests,
        limit_tokens=tpm,
        remaining_tokens=remaining_tokens,
        reset_tokens_s=reset_tokens,
        too_large=too_large,
    )
