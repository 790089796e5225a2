"""The pipeline's side of budgets: reserve a request's budgets on its claim (429
`insufficient_quota` when one is spent), and the `x-budget-*` headers of every answer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from switchyard.edge import metrics
from switchyard.edge.budget import BudgetsUnavailable, Standing, Verdict, scopes_of
from switchyard.edge.budget.period import iso
from switchyard.edge.errors import OpenAIError

if TYPE_CHECKING:
    from switchyard.edge.auth.keys import ApiKey
    from switchyard.edge.claim import Claim


async def reserve_budget(
    claim: Claim, key: ApiKey, model: str, input_tokens: int, output_tokens: int
) -> None:
    """Charge the most the request may use (`input_tokens` of prompt, `output_tokens` it
    may generate) to its key's and tenant's budgets, held on the claim until it ends;
    429 when one is spent (nothing charged then), 503 when the store is away and the
    policy is fail-closed."""
    edge = claim.edge
    scopes = scopes_of(key, edge.keys.tenant_budgets)
    if not scopes:
        return
    try:
        verdict = await edge.budgets.reserve(scopes, input_tokens, output_tokens)
    except BudgetsUnavailable as exc:
        metrics.REFUSALS.labels(model, "budget_unavailable").inc()
        raise OpenAIError.unavailable(
            "Token budgets are unavailable, so requests are refused; retry after a moment.",
            max(1, math.ceil(exc.retry_after_s)),
            kind="budget_unavailable",
        ) from None
    now_s = edge.budgets.now()
    claim.headers.update(budget_headers(verdict, edge.budgets.zone, now_s))
    claim.budget = verdict.reservation
    refused = verdict.refused_by
    if refused is not None:
        metrics.REFUSALS.labels(model, "insufficient_quota").inc()
        raise exhausted(refused, edge.budgets.zone)


def budget_headers(verdict: Verdict, zone: ZoneInfo, now_s: float) -> dict[str, str]:
    """The budget with the fewest tokens left, as `x-ratelimit-*` are written: its limit,
    what remains after this request's charge, the seconds until it gets tokens back;
    and that instant (ISO 8601 in the budgets' zone), and whose budget it is."""
    tightest = verdict.tightest
    if tightest is None:
        return {}
    return {
        "x-budget-limit-tokens": str(tightest.scope.budget.tokens),
        "x-budget-remaining-tokens": str(tightest.remaining),
        "x-budget-reset-tokens": f"{max(tightest.reset_ms / 1000 - now_s, 0):.3f}s",
        "x-budget-reset-at": iso(tightest.reset_ms, zone),
        "x-budget-scope": tightest.scope.kind,
    }


def exhausted(standing: Standing, zone: ZoneInfo) -> OpenAIError:
    """OpenAI's answer for a spent quota: 429 `insufficient_quota`, not to be retried."""
    scope, budget = standing.scope, standing.scope.budget
    size = f"{budget.period} token budget ({budget.tokens:,} tokens)"
    if scope.kind == "key":
        whose = f"This key's {size}"
    else:
        whose = f"The {size} of this key's tenant '{scope.name}'"
    at = iso(standing.reset_ms, zone)
    if standing.cost > budget.tokens:
        message = (
            f"{whose} is smaller than this request, which may use up to {standing.cost:,} "
            "tokens: lower max_tokens or shorten the prompt."
        )
    elif scope.period.rolling:
        message = f"{whose} is spent; tokens start coming back at {at}."
    else:
        message = f"{whose} is spent; it resets at {at}."
    return OpenAIError(
        429,
        message,
        type="insufficient_quota",
        code="insufficient_quota",
        # The openai SDKs retry a 429 unless told not to: waiting seconds will not help.
        headers={"x-should-retry": "false"},
        kind="insufficient_quota",
    )
