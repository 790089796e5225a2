"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: the pipeline, in Anthropic's terms.

Messages: authenticate (`x-api-key`, or `Authorization: Bearer`, the same keys) → read and
validate the body → resolve the model (404) → a ready backend (503) → a chat model (400)
→ translate (`convert`, every chat check) → `pipeline.generate` (rate limits, checks,
admission, the generation) with this API's encoder. Errors are answered in Anthropic's
dialect by the request's `Claim`.

Count tokens: the same up to the translation, then one request (no tokens) on the key's
rate limits and the `CountTokens` rpc on a serving endpoint of the route, another one
tried when an endpoint is UNAVAILABLE. It takes no admission slot: it generates nothing,
and must not queue behind generations.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import grpc
import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from switchyard.edge.anthropic.convert import messages_request
from switchyard.edge.anthropic.encoding import MessagesEncoder
from switchyard.edge.anthropic.errors import AnthropicErrors, unauthorized
from switchyard.edge.anthropic.schemas import CountTokensRequest, MessagesRequest
from switchyard.edge.auth import ApiKey
from switchyard.edge.claim import Claim
from switchyard.edge.errors import OpenAIError, from_inference
from switchyard.edge.exchange import Exchange
from switchyard.edge.pipeline import (
    capable,
    check_parts,
    read_body,
    ready,
    request_id_of,
    reserve,
    route_for,
)
from switchyard.edge.pipeline import generate as generate_canonical
from switchyard.edge.routing.affinity import session_of
from switchyard.edge.routing.table import Route
from switchyard.edge.state import EdgeState
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb

#: The exchange's api names (metrics labels, request records).
MESSAGES = "messages"
COUNT_TOKENS = "count_tokens"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def authenticate(edge: EdgeState, request: Request) -> ApiKey:
    """The caller's key: `x-api-key` (Anthropic's header) if sent, else the bearer token."""
    given = request.headers.get("x-api-key")
    if given is not None:
        key = edge.keys.authenticate_key(given.strip())
    else:
        key = edge.keys.authenticate(request.headers.get("authorization"))
    if key is None:
        raise unauthorized()
    return key


def _describe(exc: ValidationError) -> OpenAIError:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            parts.append(f"{where}: not supported by this server (leave it out)")
        elif error["type"] == "missing":
            parts.append(f"{where}: Field required")
        else:
            parts.append(f"{where}: {error['msg']}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return OpenAIError.invalid("; ".join(parts) + more)


M = TypeVar("M", MessagesRequest, CountTokensRequest)


def parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _describe(exc) from None


class _Served(Response):
    """A `Response` subclass only so that FastAPI hands it to the server untouched."""

    def __init__(self, api: str, request: Request, edge: EdgeState) -> None:
        self.background = None
        self.api = api
        self.request = request
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(self.request)
        exchange = Exchange(request_id=request_id, api=self.api, started=time.perf_counter())
        errors = AnthropicErrors(request_id)
        async with Claim(self.edge, exchange, receive, send, errors=errors) as claim:
            claim.headers["request-id"] = request_id  # where Anthropic's SDK reads it
            if self.api == MESSAGES:
                await _messages(self.request, claim)
            else:
                await _count_tokens(self.request, claim)


def handle_messages(request: Request, edge: EdgeState) -> Response:
    return _Served(MESSAGES, request, edge)


def handle_count_tokens(request: Request, edge: EdgeState) -> Response:
    return _Served(COUNT_TOKENS, request, edge)


async def _messages(request: Request, claim: Claim) -> None:
    edge, ex = claim.edge, claim.exchange
    deadline = asyncio.get_running_loop().time() + edge.settings.request_timeout_s
    key = authenticate(edge, request)
    ex.key_name, ex.tenant = key.name, key.tenant
    body = parse(MessagesRequest, await read_body(request, edge.settings.max_body_bytes))
    ex.requested_model, ex.stream = body.model, body.stream
    # The session a `session` route keeps on one replica: a header, else the end-user id.
    claim.session = session_of(
        request.headers, body.metadata.user_id if body.metadata is not None else None
    )
    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    ready(edge, route)
    capable(edge, route, body.model, pb.CAPABILITY_CHAT)
    canonical = messages_request(body, route.name, ex.request_id, edge.rules)
    encoder = MessagesEncoder("msg_" + ex.request_id, body.model)
    await generate_canonical(claim, key, route, canonical, encoder, deadline)


async def _count_tokens(request: Request, claim: Claim) -> None:
    edge, ex = claim.edge, claim.exchange
    deadline = asyncio.get_running_loop().time() + edge.settings.request_timeout_s
    key = authenticate(edge, request)
    ex.key_name, ex.tenant = key.name, key.tenant
    body = parse(CountTokensRequest, await read_body(request, edge.settings.max_body_bytes))
    ex.requested_model = body.model
    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    ready(edge, route, hold=False)  # a count is not worth waiting for a wake: 503 at once
    capable(edge, route, body.model, pb.CAPABILITY_CHAT)
    canonical = messages_request(body, route.name, ex.request_id, edge.rules)
    # One request on the key's RPM and no tokens: nothing is generated, and the count
    # itself is what a client asks before deciding to spend them.
    await reserve(claim, key, route, 0, 0)
    await claim.watch_client()
    if canonical.needs_checks:
        await check_parts(edge, route.name, canonical)
    count = await _count(claim, route, canonical.request, deadline)
    # Not `ex.used`: the claim would settle the reservation with these tokens, and the
    # metrics count them as the engine's; a count reads no prompt into a model.
    await claim.respond(_JSON_HEADERS, orjson.dumps({"input_tokens": count}))


async def _count(claim: Claim, route: Route, request: pb.GenerateRequest, deadline: float) -> int:
    """The CountTokens rpc on a serving endpoint, the next one tried while they are
    unavailable (at most `max_attempts`)."""
    edge = claim.edge
    settings = edge.settings
    tried: set[str] = set()
    error: OpenAIError | None = None
    loop = asyncio.get_running_loop()
    while len(tried) < settings.max_attempts:
        endpoint = edge.pool.pick(route, tried)
        if endpoint is None:
            break
        tried.add(endpoint.address)
        claim.exchange.attempts += 1
        claim.exchange.endpoint = endpoint.address
        endpoint.in_flight += 1
        try:
            timeout = max(deadline - loop.time(), 0.001)
            counted = await endpoint.stub.CountTokens(
                request, timeout=timeout, metadata=endpoint.call_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            failure = from_rpc_error(exc)
            if failure.code == grpc.StatusCode.UNAVAILABLE:
                endpoint.call_failed()
            if failure.code == grpc.StatusCode.UNIMPLEMENTED:
                raise OpenAIError(
                    502,
                    f"The backend of model '{route.name}' cannot count tokens.",
                    type="server_error",
                    code="backend_error",
                    kind="count_tokens_unimplemented",
                ) from None
            error = from_inference(failure, settings.retry_after_s)
            if failure.code not in _RETRYABLE:
                raise error from None
            continue
        finally:
            endpoint.in_flight -= 1
        endpoint.call_succeeded()
        return int(counted.input_tokens)
    raise error or OpenAIError.unavailable(
        f"No backend for model '{route.name}' is ready; retry after a moment.",
        settings.retry_after_s,
    )
