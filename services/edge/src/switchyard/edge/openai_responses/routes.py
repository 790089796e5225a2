"""The Responses API's routes: create (whole, streamed, background), retrieve, delete,
list input items, cancel.

`POST /v1/responses` runs under a `Claim` as every generating route does (auth, body,
then `pipeline.respond`) and keeps the finished response before the answer's last byte,
so that a client holding the answer can retrieve or continue it at once. The other
routes read the store under the key's tenant: another tenant's response is not found
(404), as an unknown, expired or deleted one is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from switchyard.edge.auth import ApiKey
from switchyard.edge.claim import Claim, body_message
from switchyard.edge.errors import OpenAIError
from switchyard.edge.exchange import Exchange
from switchyard.edge.openai_responses.convert import canonical_request
from switchyard.edge.openai_responses.items import new_id
from switchyard.edge.openai_responses.jobs import JobsFull, NotCancellable
from switchyard.edge.openai_responses.pipeline import (
    conversation,
    not_found,
    queued,
    respond,
    store_unavailable,
)
from switchyard.edge.openai_responses.schemas import CreateResponse
from switchyard.edge.openai_responses.store import StoredResponse
from switchyard.edge.pipeline import capable, read_body, request_id_of, route_for
from switchyard.edge.redis_pool import STORE_ERRORS
from switchyard.edge.routing.affinity import session_of
from switchyard.edge.state import EdgeState
from switchyard.inference.v1 import inference_pb2 as pb

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_JSON_DOC: dict[str, Any] = {
    "description": "OK",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
#: input_items.list: OpenAI's page sizes.
DEFAULT_PAGE, MAX_PAGE = 20, 100


def parse_create(raw: bytes) -> CreateResponse:
    """The create body, or a 400 naming what is wrong in it."""
    try:
        return CreateResponse.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            raise OpenAIError.invalid(
                f"{param} is not supported by this server (leave it out)",
                param,
                "unsupported_parameter",
            ) from None
        where = param or "body"
        raise OpenAIError.invalid(f"Invalid request: {where}: {first['msg']}", param) from None


def _authenticate(edge: EdgeState, request: Request) -> ApiKey:
    key = edge.keys.authenticate(request.headers.get("authorization"))
    if key is None:
        raise OpenAIError.unauthorized()
    return key


# -- create -------------------------------------------------------------------------------------


class _Create(Response):
    """`POST /v1/responses`, run when the server calls it (see `pipeline._Pipeline`)."""

    def __init__(self, request: Request, edge: EdgeState) -> None:
        self.background = None
        self.request = request
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(
            request_id=request_id_of(self.request), api="responses", started=time.perf_counter()
        )
        async with Claim(self.edge, exchange, receive, send) as claim:
            await _create(self.request, claim)


async def _create(request: Request, claim: Claim) -> None:
    edge, ex = claim.edge, claim.exchange
    deadline = asyncio.get_running_loop().time() + edge.settings.request_timeout_s
    key = _authenticate(edge, request)
    ex.key_name, ex.tenant = key.name, key.tenant
    raw = await read_body(request, edge.settings.max_body_bytes)
    body = parse_create(raw)
    claim.session = session_of(request.headers, body.user)  # for a `session` route
    response_id = new_id("resp")
    if body.background:
        await _submit(claim, key, body, response_id, raw)
    else:
        await respond(claim, key, body, response_id, deadline, keep=edge.responses.put)


async def _submit(
    claim: Claim, key: ApiKey, body: CreateResponse, response_id: str, raw: bytes
) -> None:
    """`background: true`: checked as a run would check it (a bad request is refused now,
    not failed later), queued, and answered at once (`queued`), or streamed from its
    events as the job produces them."""
    edge, ex = claim.edge, claim.exchange
    ex.requested_model, ex.stream = body.model, body.stream
    if not body.store:
        raise OpenAIError.invalid(
            "A background response must be stored: background needs store true.", "store"
        )
    context, new = await conversation(edge, key, body)
    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    capable(edge, route, body.model, pb.CAPABILITY_CHAT)
    origins = ["previous_response_id"] * len(context) + [f"input[{i}]" for i in range(len(new))]
    canonical_request(body, context + new, origins, route.name, ex.request_id, edge.rules)
    stored = queued(body, response_id, key.tenant, key.name, raw)
    try:
        await edge.jobs.submit(stored)
    except JobsFull:
        raise OpenAIError.busy(
            "Too many background responses are queued; retry after a moment.",
            edge.settings.retry_after_s,
            kind="jobs_full",
        ) from None
    except STORE_ERRORS:
        raise store_unavailable(edge) from None
    if not body.stream:
        await claim.watch_client()
        await claim.respond(_JSON_HEADERS, orjson.dumps(stored.response))
        return
    await claim.watch_client()
    await claim.start_stream(_SSE_HEADERS)
    events = edge.jobs.events(key.tenant, response_id, -1)
    try:
        async for event in events:
            await claim.send(body_message(event))
            claim.watch.touch()
    finally:
        close: Callable[[], Awaitable[None]] | None = getattr(events, "aclose", None)
        if close is not None:
            await close()
    await claim.end_stream(b"")


# -- the stored response ------------------------------------------------------------------------


async def _stored(edge: EdgeState, key: ApiKey, response_id: str) -> StoredResponse:
    try:
        stored = await edge.responses.get(key.tenant, response_id)
    except STORE_ERRORS:
        raise store_unavailable(edge) from None
    if stored is None:
        raise not_found(response_id)
    return stored


def _int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise OpenAIError.invalid(f"{name} must be an integer", name) from None


async def retrieve(request: Request, edge: EdgeState, response_id: str) -> Response:
    key = _authenticate(edge, request)
    stored = await _stored(edge, key, response_id)
    if request.query_params.get("stream", "false").lower() != "true":
        return JSONResponse(stored.response)
    if not stored.response.get("background"):
        raise OpenAIError.invalid(
            "Only a background response can be streamed again (stream=true).", "stream"
        )
    after = _int(request.query_params.get("starting_after"), "starting_after", -1)
    return StreamingResponse(
        edge.jobs.events(key.tenant, response_id, after),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def delete(request: Request, edge: EdgeState, response_id: str) -> Response:
    key = _authenticate(edge, request)
    try:
        deleted = await edge.responses.delete(key.tenant, response_id)
    except STORE_ERRORS:
        raise store_unavailable(edge) from None
    if not deleted:
        raise not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def page(
    items: list[dict[str, Any]], *, after: str | None, limit: int, order: str
) -> dict[str, Any]:
    """One page of `input_items.list` (OpenAI's cursor: the id of the last item seen)."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise OpenAIError.invalid(f"after: no input item has the id '{after}'", "after")
        start = ids.index(after) + 1
    data = ordered[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(ordered),
    }


async def input_items(request: Request, edge: EdgeState, response_id: str) -> Response:
    key = _authenticate(edge, request)
    query = request.query_params
    limit = _int(query.get("limit"), "limit", DEFAULT_PAGE)
    if not 1 <= limit <= MAX_PAGE:
        raise OpenAIError.invalid(f"limit must be between 1 and {MAX_PAGE}", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise OpenAIError.invalid("order must be 'asc' or 'desc'", "order")
    stored = await _stored(edge, key, response_id)
    return JSONResponse(
        page(stored.input_items, after=query.get("after"), limit=limit, order=order)
    )


async def cancel(request: Request, edge: EdgeState, response_id: str) -> Response:
    key = _authenticate(edge, request)
    try:
        cancelled = await edge.jobs.cancel(key.tenant, response_id)
    except NotCancellable as exc:
        raise OpenAIError.invalid(str(exc), "response_id") from None
    except STORE_ERRORS:
        raise store_unavailable(edge) from None
    if cancelled is None:
        raise not_found(response_id)
    return JSONResponse(cancelled.response)


# -- registration -------------------------------------------------------------------------------

Handler = Callable[[Request, EdgeState, str], Awaitable[Response]]


def _answering(
    handler: Handler, request: Request, edge: EdgeState, response_id: str
) -> Awaitable[Response]:
    async def answer() -> Response:
        try:
            return await handler(request, edge, response_id)
        except OpenAIError as error:
            return error.response()

    return answer()


def register(
    app: FastAPI,
    edge_of: Callable[[Request], EdgeState],
    responses: dict[int | str, dict[str, Any]],
    create_doc: dict[str, Any],
) -> None:
    """The Responses API's routes on `app` (`responses`: the error answers' docs;
    `create_doc`: the create body's)."""
    security: dict[str, Any] = {"security": [{"bearer": []}]}

    @app.post(
        "/v1/responses",
        openapi_extra=create_doc,
        responses={
            200: {
                "description": "A Response object, or its events (stream: true)",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **responses,
        },
        tags=["openai"],
    )
    async def create_response(request: Request) -> Response:
        """Create a response (OpenAI's Responses API): stored unless `store: false`,
        continued with `previous_response_id`, streamed with `stream: true`, run later
        with `background: true`."""
        return _Create(request, edge_of(request))

    async def retrieve_or_delete(response_id: str, request: Request) -> Response:
        handler = delete if request.method == "DELETE" else retrieve
        return await _answering(handler, request, edge_of(request), response_id)

    # One route for both methods, first, so that a 405 on this path lists both in its
    # Allow header (a method missing from every route answers with the first one's); the
    # two below it only document them.
    app.add_api_route(
        "/v1/responses/{response_id}",
        retrieve_or_delete,
        methods=["GET", "DELETE"],
        include_in_schema=False,
    )

    @app.get(
        "/v1/responses/{response_id}",
        openapi_extra=security,
        responses={200: _JSON_DOC, **responses},
        tags=["openai"],
    )
    async def retrieve_response(response_id: str, request: Request) -> Response:
        """A stored response of the key's tenant; a background one's events with
        `stream=true` (after `starting_after`)."""
        return await _answering(retrieve, request, edge_of(request), response_id)

    @app.delete(
        "/v1/responses/{response_id}",
        openapi_extra=security,
        responses={200: _JSON_DOC, **responses},
        tags=["openai"],
    )
    async def delete_response(response_id: str, request: Request) -> Response:
        """Forget a stored response."""
        return await _answering(delete, request, edge_of(request), response_id)

    @app.get(
        "/v1/responses/{response_id}/input_items",
        openapi_extra=security,
        responses={200: _JSON_DOC, **responses},
        tags=["openai"],
    )
    async def list_input_items(response_id: str, request: Request) -> Response:
        """A stored response's input items, a page at a time (`after`, `limit`, `order`)."""
        return await _answering(input_items, request, edge_of(request), response_id)

    @app.post(
        "/v1/responses/{response_id}/cancel",
        openapi_extra=security,
        responses={200: _JSON_DOC, **responses},
        tags=["openai"],
    )
    async def cancel_response(response_id: str, request: Request) -> Response:
        """Cancel a background response wherever it runs."""
        return await _answering(cancel, request, edge_of(request), response_id)
