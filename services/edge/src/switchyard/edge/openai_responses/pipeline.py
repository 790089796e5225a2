"""One Responses API generation under its `Claim`: the conversation, the translation, the
generation, and what is to be kept of it.

`run` is what both the `POST /v1/responses` route and the background jobs' workers call:
it reads the conversation (`previous_response_id` from the store, then `input`),
translates it onto the contract (`convert`), answers through the shared pipeline tail
(`pipeline.generate`: limits, checks, admission, the generation) in the Responses API's
shapes (`encoder`), and returns the response to keep — or None when `store` is false or
the generation did not finish (the claim answered its error). It keeps nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.types import Message

from switchyard.edge.auth import ApiKey
from switchyard.edge.claim import Claim
from switchyard.edge.errors import OpenAIError
from switchyard.edge.openai_responses.convert import canonical_request, tools
from switchyard.edge.openai_responses.encoder import ResponseEncoder
from switchyard.edge.openai_responses.items import normalize
from switchyard.edge.openai_responses.memory import encoded
from switchyard.edge.openai_responses.schemas import CreateResponse
from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse
from switchyard.edge.pipeline import capable, generate, ready, route_for
from switchyard.edge.redis_pool import STORE_ERRORS
from switchyard.edge.state import EdgeState
from switchyard.inference.v1 import inference_pb2 as pb

log = structlog.get_logger(__name__)

#: What a route does with the response to keep, before the answer's last byte goes out.
Keep = Callable[[StoredResponse], Awaitable[None]]


def head(body: CreateResponse, response_id: str, created_at: int) -> dict[str, Any]:
    """The Response object's fields that the request decides (echoed as OpenAI echoes them)."""
    fmt = (body.text or {}).get("format") or {"type": "text"}
    reasoning = body.reasoning
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "model": body.model,
        "background": body.background,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": None,
        "metadata": body.metadata or {},
        "parallel_tool_calls": True
        if body.parallel_tool_calls is None
        else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "service_tier": "default",
        "store": body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt, "verbosity": (body.text or {}).get("verbosity") or "medium"},
        "tool_choice": body.tool_choice or "auto",
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": bool(t.strict),
            }
            for t in tools(body)
        ],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "user": body.user,
    }


def queued(
    body: CreateResponse, response_id: str, tenant: str, key_name: str, raw: bytes
) -> StoredResponse:
    """A background response as it is kept before it runs (status `queued`)."""
    response = {
        **head(body, response_id, int(time.time())),
        "status": "queued",
        "error": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
    return StoredResponse(response_id, tenant, key_name, response, request=raw)


def store_unavailable(edge: EdgeState) -> OpenAIError:
    return OpenAIError.unavailable(
        "The response store is unavailable; retry after a moment.",
        edge.settings.retry_after_s,
        kind="store_unavailable",
    )


def not_found(response_id: str) -> OpenAIError:
    return OpenAIError(404, f"Response with id '{response_id}' not found.", kind="not_found")


async def conversation(
    edge: EdgeState, key: ApiKey, body: CreateResponse
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The items the model reads before this response's input (the previous response's
    context and output), and this response's input items."""
    new = normalize(body.input)
    if body.previous_response_id is None:
        return [], new
    try:
        previous = await edge.responses.get(key.tenant, body.previous_response_id)
    except STORE_ERRORS:
        raise store_unavailable(edge) from None
    status = previous.response.get("status") if previous is not None else None
    if previous is None or status not in ("completed", "incomplete"):
        # OpenAI's answer (400, not 404): another tenant's id is not found either.
        if previous is None:
            message = f"Previous response with id '{body.previous_response_id}' not found."
            code = "previous_response_not_found"
        else:
            message = (
                f"Previous response with id '{body.previous_response_id}' is {status}; "
                "only a finished response can be continued."
            )
            code = "previous_response_not_finished"
        raise OpenAIError.invalid(message, "previous_response_id", code)
    return previous.context + previous.response["output"], new


async def run(
    claim: Claim, key: ApiKey, body: CreateResponse, response_id: str, deadline: float
) -> StoredResponse | None:
    """Run the response under `claim` (streamed or whole as `claim.exchange.stream` says),
    answering through it; the response to keep, or None (`store` false, or it did not
    finish: the claim answers the error)."""
    return await respond(claim, key, body, response_id, deadline)


async def respond(
    claim: Claim,
    key: ApiKey,
    body: CreateResponse,
    response_id: str,
    deadline: float,
    keep: Keep | None = None,
) -> StoredResponse | None:
    """`run`, and with `keep`: the finished response is kept before the answer's last
    byte goes out, so that a client that has it can retrieve or continue it at once."""
    edge, ex = claim.edge, claim.exchange
    # Streamed when the client asked, or when the caller's exchange says (a job's events).
    ex.requested_model, ex.stream = body.model, ex.stream or body.stream
    created_at = int(time.time())
    encoder = ResponseEncoder(head(body, response_id, created_at))
    claim.errors = encoder
    context, new = await conversation(edge, key, body)

    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    ready(edge, route)
    capable(edge, route, body.model, pb.CAPABILITY_CHAT)
    origins = ["previous_response_id"] * len(context) + [f"input[{i}]" for i in range(len(new))]
    canonical = canonical_request(
        body, context + new, origins, route.name, ex.request_id, edge.rules
    )
    stored = StoredResponse(
        response_id, key.tenant, key.name, {}, input_items=new, context=context + new
    )
    if body.store:
        _check_size(stored, edge.settings.responses_max_bytes)
        if keep is not None:
            _keep_before_the_end(claim, encoder, stored, keep)

    await generate(claim, key, route, canonical, encoder, deadline)
    if not body.store or not encoder.finished:
        return None
    assert encoder.final is not None  # finished
    stored.response = encoder.final
    return stored


def _check_size(stored: StoredResponse, limit: int) -> None:
    """The conversation alone over the store's limit: refused before any engine runs it."""
    size = len(encoded(stored))
    if size > limit:
        raise OpenAIError.invalid(
            f"The conversation to store is {size} bytes, over this server's limit of {limit} "
            "bytes per stored response (send store: false, or a shorter input).",
            "input",
            "response_too_large",
        )


def _keep_before_the_end(
    claim: Claim, encoder: ResponseEncoder, stored: StoredResponse, keep: Keep
) -> None:
    """Keep the finished response just before the message that ends the answer."""
    send = claim.send
    kept = False

    async def keeping_send(message: Message) -> None:
        nonlocal kept
        last = message["type"] == "http.response.body" and not message.get("more_body", False)
        if last and not kept and encoder.finished:
            kept = True
            assert encoder.final is not None  # finished
            stored.response = encoder.final
            try:
                await keep(stored)
            except ResponseTooLarge as exc:
                log.warning("response_not_stored", response_id=stored.id, reason=str(exc))
            except STORE_ERRORS as exc:
                log.warning("response_not_stored", response_id=stored.id, reason=repr(exc))
        await send(message)

    claim.send = keeping_send
