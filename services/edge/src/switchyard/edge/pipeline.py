"""The request pipeline for /v1/chat/completions and /v1/completions, top to bottom.

authenticate → read and validate the body (cheap checks: types, bounds, schemas' sizes,
images' sizes and addresses) → resolve the model (404 if the key may not use it) → a ready
backend? (503, unless one is coming: then the request is held for it once its client is
watched, `held_until_ready`) → rate limits (429) → expensive checks, off the event loop
(schemas against their metaschema, images' base64: 400, or 429 when the checks are
saturated) → admission (429) → the generation itself (`generation.Generation`, which calls
the backend and relays the result).

With the response cache on, a deterministic request is looked up (`look_up`) before the
rate limits: a hit is charged one request and no tokens (`reserve_hit`), skips the checks
and admission, and is replayed; a miss runs as usual and is kept if it ends whole.

Authentication comes first, so unauthenticated callers cost us no parsing; expensive
checks come after rate limiting, so a key out of quota costs us no more than a refusal.

The whole of it runs inside the request's `Claim`, which holds what the request takes
(reservation, slot, endpoint...) and, when it ends, answers the error raised on the way
(`OpenAIError`), gives everything back and records the request once, a client that left
(while uploading, checked, queued or served) as a 499. Only parsing, translation and
encoding depend on the API; the chat and completions routes share everything else.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from switchyard.edge import metrics
from switchyard.edge.admission import Refused
from switchyard.edge.auth import ApiKey
from switchyard.edge.budget.charge import reserve_budget
from switchyard.edge.cache import CacheKey, cache_key, cacheable
from switchyard.edge.cache.generations import CorruptEntry, read_stream, read_whole, stream_usage
from switchyard.edge.checks import ChecksBusy, ChecksUnavailable, InvalidPart, request_parts
from switchyard.edge.claim import Claim, body_message
from switchyard.edge.convert import (
    Canonical,
    chat_request,
    completion_request,
    estimate_prompt_tokens,
)
from switchyard.edge.encoding import GenerationEncoder
from switchyard.edge.errors import OpenAIError
from switchyard.edge.exchange import Exchange
from switchyard.edge.generation import SSE_HEADERS, Generation
from switchyard.edge.holding import HoldRefused
from switchyard.edge.ratelimit import Decision, LimiterUnavailable, Limits
from switchyard.edge.responses import KEEPALIVE, Encoder
from switchyard.edge.routing.affinity import request_key, session_of
from switchyard.edge.routing.endpoints import Capability
from switchyard.edge.routing.table import Route
from switchyard.edge.schemas import (
    UNSUPPORTED,
    ChatCompletionRequest,
    CompletionRequest,
    unsupported_message,
)
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.state import EdgeState
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import CheckedSchemas

Api = Literal["chat", "completions"]
_API_NAMES: dict[Capability, str] = {
    pb.CAPABILITY_CHAT: "chat completions",
    pb.CAPABILITY_COMPLETIONS: "completions",
    pb.CAPABILITY_EMBEDDINGS: "embeddings",
}
Body = ChatCompletionRequest | CompletionRequest
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: The header that says whether an answer came from the response cache ("hit" / "miss").
CACHE_HEADER = "x-switchyard-cache"
_NO_CACHE_DIRECTIVES = frozenset({"no-store", "no-cache"})


def request_id_of(request: Request) -> str:
    """The caller's `x-request-id` when it is a sane token; otherwise a new one."""
    given = request.headers.get("x-request-id")
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


def handle(api: Api, request: Request, edge: EdgeState) -> Response:
    """The route's answer: the pipeline, run when the server calls it with `send`."""
    return _Pipeline(api, request, edge)


class _Pipeline(Response):
    """A `Response` subclass only so that FastAPI hands it to the server untouched; its
    status, headers and body are decided while it runs."""

    def __init__(self, api: Api, request: Request, edge: EdgeState) -> None:
        self.background = None
        self.api: Api = api
        self.request = request
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(
            request_id=request_id_of(self.request), api=self.api, started=time.perf_counter()
        )
        async with Claim(self.edge, exchange, receive, send) as claim:
            await _serve(self.api, self.request, claim)


async def _serve(api: Api, request: Request, claim: Claim) -> None:
    edge, ex = claim.edge, claim.exchange
    settings = edge.settings
    deadline = asyncio.get_running_loop().time() + settings.request_timeout_s

    key = edge.keys.authenticate(request.headers.get("authorization"))
    if key is None:
        raise OpenAIError.unauthorized()
    ex.key_name, ex.tenant = key.name, key.tenant

    raw = await read_body(request, settings.max_body_bytes)
    body: Body = (
        parse(ChatCompletionRequest, raw) if api == "chat" else parse(CompletionRequest, raw)
    )
    ex.requested_model, ex.stream = body.model, body.stream

    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    ready(edge, route)
    capable(
        edge, route, body.model, pb.CAPABILITY_CHAT if api == "chat" else pb.CAPABILITY_COMPLETIONS
    )
    if isinstance(body, ChatCompletionRequest):
        canonical = chat_request(body, route.name, ex.request_id, edge.rules)
    else:
        canonical = completion_request(body, route.name, ex.request_id, edge.rules)
    ex.choices = body.choices
    claim.session = session_of(request.headers, body.user)

    found: Lookup[pb.GenerateResponse | list[pb.GenerateStreamResponse]] | None = None
    if edge.cache.enabled and cacheable(canonical.request):
        found = await look_up(
            claim,
            key,
            route,
            request,
            canonical.request,
            stream=body.stream,
            read=read_stream if body.stream else read_whole,
        )
    if found is not None and found.entry is not None:
        await _replay(api, claim, key, route, body, canonical.request, found.entry, deadline)
        return

    encoder = _encoder(api, body, ex.request_id, canonical.request)
    cache_as = found.key if found is not None else None
    await generate(claim, key, route, canonical, encoder, deadline, cache_as)


async def generate(
    claim: Claim,
    key: ApiKey,
    route: Route,
    canonical: Canonical,
    encoder: GenerationEncoder,
    deadline: float,
    cache_as: CacheKey | None = None,
) -> None:
    """A routed, translated generation from its rate limits on: reserve (429), watch the
    client, held while the model wakes (503 past the hold), the expensive checks (400),
    admission (429), then the generation itself, streamed or whole as
    `claim.exchange.stream` says. Every API that generates (chat, completions, Responses,
    Messages) ends here with its own encoder."""
    edge = claim.edge
    await reserve_generation(claim, key, route, canonical.request)
    await claim.watch_client()  # from here on, a client that leaves ends the request
    route = await held_until_ready(claim, route, deadline)
    if canonical.needs_checks:
        await check_parts(edge, route.name, canonical)
    try:
        await claim.admit(route, key.priority)
    except Refused as refusal:
        raise refused(refusal, route.name, edge.settings) from None
    claim.affinity = request_key(
        route.policy, canonical.request, claim.session, edge.settings.affinity_prefix_chars
    )
    await Generation(claim, canonical.request, encoder, deadline, cache_as).run()


def _encoder(api: Api, body: Body, request_id: str, canonical: pb.GenerateRequest) -> Encoder:
    """A fresh encoder: its own id and `created` (a cache hit's too)."""
    return Encoder(
        "chat" if api == "chat" else "completion",
        ("chatcmpl-" if api == "chat" else "cmpl-") + request_id,
        body.model,
        int(time.time()),
        body.include_usage,
        body.choices,
        logprobs=canonical.HasField("logprobs"),
    )


async def _replay(
    api: Api,
    claim: Claim,
    key: ApiKey,
    route: Route,
    body: Body,
    canonical: pb.GenerateRequest,
    entry: pb.GenerateResponse | list[pb.GenerateStreamResponse],
    deadline: float,
) -> None:
    """Answer a generation from its cache entry, as the engine answered it."""
    usage = entry.usage if isinstance(entry, pb.GenerateResponse) else stream_usage(entry)
    await reserve_hit(claim, key, route, usage.prompt_tokens, usage.completion_tokens)
    encoder = _encoder(api, body, claim.exchange.request_id, canonical)
    generation = Generation(claim, canonical, encoder, deadline)
    if isinstance(entry, pb.GenerateResponse):
        await generation.replay_whole(entry)
    else:
        await generation.replay_stream(entry)


# -- the response cache (shared with the embeddings route) -----------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Lookup(Generic[T]):
    """A request that may use the cache: its entry's key, and the entry found (None: a miss)."""

    key: CacheKey
    entry: T | None


def no_store(request: Request) -> bool:
    """The client asked that its answer neither come from nor go into a cache
    (`Cache-Control: no-store` or `no-cache`)."""
    value = request.headers.get("cache-control")
    if not value:
        return False
    directives = {part.split("=", 1)[0].strip().lower() for part in value.split(",")}
    return not _NO_CACHE_DIRECTIVES.isdisjoint(directives)


async def look_up(
    claim: Claim,
    key: ApiKey,
    route: Route,
    request: Request,
    canonical: pb.GenerateRequest | pb.EmbedRequest,
    *,
    stream: bool,
    read: Callable[[bytes], T],
) -> Lookup[T] | None:
    """The cache's answer for a request whose answer is deterministic (the caller checks
    `edge.cache.enabled` and, for a generation, `cacheable` first: the cheap checks);
    None when it may not use the cache: the key opted out, the client said no-store, or
    the identity of the weights serving `route` is unknown (or differs between its
    endpoints). A lookup sets the `x-switchyard-cache` header, `Exchange.cache` and the
    lookups metric; an entry that cannot be read (`read` raises) is a miss."""
    edge, ex = claim.edge, claim.exchange
    if not key.cache or no_store(request):
        return None
    identity = edge.pool.identity(route)
    if identity is None:
        return None
    name = cache_key(
        tenant=key.tenant,
        route=route.name,
        identity=identity,
        api=ex.api,
        stream=stream,
        request=canonical,
    )
    stored = await edge.cache.get(name)
    entry: T | None = None
    if stored is not None:
        try:
            entry = read(stored)
        except CorruptEntry:
            entry = None  # rewritten by this request's answer
    result = "miss" if entry is None else "hit"
    ex.cache = result
    claim.headers[CACHE_HEADER] = result
    metrics.CACHE_LOOKUPS.labels(route.name, ex.api, result).inc()
    return Lookup(name, entry)


async def reserve_hit(
    claim: Claim, key: ApiKey, route: Route, prompt_tokens: int, completion_tokens: int
) -> None:
    """A hit counts as one request on the key's RPM and no tokens on its TPM (no engine
    ran); its record carries the stored answer's usage, and the tokens it saved are
    counted. Then the client is watched (no admission slot: no engine is called)."""
    try:
        await reserve(claim, key, route, 0, 0)
    except OpenAIError:
        # Refused (429, 503): the answer is the refusal, which is not the cache's.
        claim.headers.pop(CACHE_HEADER, None)
        claim.exchange.cache = None
        raise
    claim.exchange.used(prompt_tokens, completion_tokens)
    metrics.CACHE_SAVED_TOKENS.labels(route.name, "prompt").inc(prompt_tokens)
    metrics.CACHE_SAVED_TOKENS.labels(route.name, "completion").inc(completion_tokens)
    await claim.watch_client()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise OpenAIError.invalid("Invalid Content-Length header.")
        if int(declared) > limit:
            raise OpenAIError.too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OpenAIError.too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: ErrorDetails) -> str:
    loc = error["loc"]
    if loc and loc[0] in UNSUPPORTED:
        return unsupported_message(str(loc[0]))
    return f"{'.'.join(str(p) for p in loc) or 'body'}: {error['msg']}"


def _validation_error(exc: ValidationError) -> OpenAIError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    parts = [_describe(e) for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return OpenAIError.invalid("Invalid request: " + "; ".join(parts) + more, param)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def route_for(edge: EdgeState, key: ApiKey, model: str) -> Route:
    """The route serving `model`, if the key may use it (404)."""
    route = edge.routes.resolve(model)
    if route is None or not (key.allows(model) or key.allows(route.name)):
        raise OpenAIError.model_not_found(model)
    return route


def capable(edge: EdgeState, route: Route, model: str, capability: Capability) -> None:
    """The model serves this API (400 if not: an embedding model asked to chat, say), as
    its adapters say; with no adapter serving yet there is nothing to say."""
    served = edge.pool.capabilities(route)
    if served is not None and capability not in served:
        raise OpenAIError.invalid(
            f"model '{model}' does not support {_API_NAMES[capability]}",
            param="model",
            code="model_not_supported",
        )


def ready(edge: EdgeState, route: Route, *, hold: bool = True) -> None:
    """A backend is ready for `route`, or one is coming and the request will be held for
    it (`held_until_ready`, once the client is watched); 503 if not. `hold=False`: 503
    whenever none is ready now (a count of tokens is not worth a wait)."""
    if route.waking or not edge.pool.healthy(route):
        if route.waking and edge.demand is not None:
            edge.demand(route)  # scaled to zero or loading: ask the operator for a replica
        if hold and holds(edge, route):
            return
        metrics.REFUSALS.labels(route.name, "no_backend").inc()
        raise _no_backend(edge, route, "no_backend")


def holds(edge: EdgeState, route: Route) -> bool:
    """Whether a request for `route`, which has no serving endpoint, is held for one: when
    holding is on and a replica is coming: the route is waking (scaled to zero, loading),
    or its source wakes models (the cluster's: its EndpointSlices say ready before this
    edge's health watch does). A file route with no serving endpoint is an outage that
    no one is waking: 503 at once, as before holding existed."""
    return edge.holds.enabled and (route.waking or edge.demand is not None)


def _no_backend(edge: EdgeState, route: Route, kind: str) -> OpenAIError:
    settings = edge.settings
    return OpenAIError.unavailable(
        f"No backend for model '{route.name}' is ready yet; retry after a moment.",
        (
            route.wake_retry_after_s(settings.wake_retry_after_s)
            if route.waking
            else settings.retry_after_s
        ),
        kind=kind,
    )


async def held_until_ready(claim: Claim, route: Route, deadline: float) -> Route:
    """The route to serve the request with: `route` when a replica serves it; else, where
    `holds`, the route once one does, the request held in its model's line meanwhile
    (call once the client is watched: a client that leaves frees its place at once).
    Past the line's bound or the hold timeout: 503 with Retry-After, kind `hold_full` or
    `hold_timeout`.

    A stream held longer than `stream_keepalive_s` commits to its 200 and SSE headers
    then, and gets keep-alive comments until the first event; a failure after that is
    the stream's last event, in its API's dialect (see `Claim`). A shorter hold keeps a
    real 503 for a failure."""
    edge = claim.edge
    waiting = route.waking or not edge.pool.healthy(route)
    if not waiting or not holds(edge, route):
        return route  # ready (or not ours to hold: the generation says what it finds)
    settings = edge.settings
    stream = claim.exchange.stream

    async def commit() -> None:
        await claim.start_stream(SSE_HEADERS)
        await claim.send(body_message(KEEPALIVE))
        claim.watch.touch()

    try:
        return await edge.holds.hold(
            route.name,
            deadline,
            patience_s=settings.stream_keepalive_s if stream else None,
            meanwhile=commit if stream else None,
        )
    except HoldRefused as refusal:
        if refusal.reason == "gone":
            raise OpenAIError.model_not_found(
                claim.exchange.requested_model or route.name
            ) from None
        kind = f"hold_{refusal.reason}"
        metrics.REFUSALS.labels(route.name, kind).inc()
        now = edge.routes.resolve(route.name) or route
        raise _no_backend(edge, now, kind) from None


async def reserve_generation(
    claim: Claim, key: ApiKey, route: Route, canonical: pb.GenerateRequest
) -> None:
    """Reserve the most a generation can use: the prompt once, and each of its n choices up
    to its max_tokens (or what the context leaves, within the default reserve)."""
    settings = claim.edge.settings
    prompt_estimate = estimate_prompt_tokens(canonical)
    if canonical.sampling.HasField("max_tokens"):
        completion_reserve = canonical.sampling.max_tokens
    else:
        room = claim.edge.pool.max_model_len(route) - prompt_estimate
        completion_reserve = (
            min(settings.default_reserved_completion_tokens, room)
            if room > 0
            else settings.default_reserved_completion_tokens
        )
    reserved = prompt_estimate + completion_reserve * max(canonical.n, 1)
    await reserve(claim, key, route, reserved, prompt_estimate)


async def reserve(
    claim: Claim, key: ApiKey, route: Route, reserved: int, prompt_estimate: int
) -> None:
    """Reserve `reserved` tokens and one request on the key's limits (429 past them; 503
    when the limiter is unavailable and fails closed); the real usage settles it when the
    request ends (see `Claim`). The key's and tenant's budgets first: a request refused by
    its budget charges no limiter."""
    await reserve_budget(claim, key, route.name, prompt_estimate, reserved - prompt_estimate)
    try:
        decision = await claim.reserve(
            key.name, Limits(key.rpm, key.tpm), reserved, prompt_estimate
        )
    except LimiterUnavailable as exc:
        metrics.REFUSALS.labels(route.name, "limiter_unavailable").inc()
        raise OpenAIError.unavailable(
            "Rate limiting is unavailable, so requests are refused; retry after a moment.",
            max(1, math.ceil(exc.retry_after_s)),
            kind="limiter_unavailable",
        ) from None
    if not decision.allowed:
        error = _rate_limited(decision, reserved, key.name)
        metrics.REFUSALS.labels(route.name, error.kind).inc()
        raise error


def _rate_limited(decision: Decision, tokens: int, key_name: str) -> OpenAIError:
    """The 429 for a refusal (the x-ratelimit-* headers are the claim's, on every answer)."""
    if decision.too_large:
        return OpenAIError(
            429,
            f"Request too large: it may use up to {tokens} tokens, more than the key's limit of "
            f"{decision.limit_tokens} tokens per minute. Lower max_tokens or shorten the prompt.",
            type="tokens",
            code="rate_limit_exceeded",
            kind="rate_limit_tokens",
        )
    kind = "requests" if decision.remaining_requests == 0 else "tokens"
    limit = decision.limit_requests if kind == "requests" else decision.limit_tokens
    retry = max(1, math.ceil(decision.retry_after_s))
    return OpenAIError(
        429,
        f"Rate limit reached for {kind} per minute on key '{key_name}': limit {limit}. "
        f"Retry in {retry}s.",
        type=kind,
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry)},
        kind=f"rate_limit_{kind}",
    )


def refused(refusal: Refused, model: str, settings: EdgeSettings) -> OpenAIError:
    metrics.REFUSALS.labels(model, refusal.reason).inc()
    return OpenAIError.busy(refusal.message, settings.retry_after_s, kind=refusal.reason)


async def check_parts(edge: EdgeState, model: str, canonical: Canonical) -> None:
    """The request's schemas against their metaschema (unless seen valid lately) and its
    images' base64, in the checks' pool."""
    digests = [(part, CheckedSchemas.digest(part.text)) for part in canonical.schemas]
    fresh = [(part, digest) for part, digest in digests if digest not in edge.checked_schemas]
    if not fresh and not canonical.images:
        return
    try:
        await edge.checks.run(
            request_parts, [(p.param, p.schema) for p, _ in fresh], canonical.images
        )
    except ChecksBusy:
        metrics.REFUSALS.labels(model, "validation_busy").inc()
        raise OpenAIError.busy(
            "Too many requests are being validated; retry after a moment.",
            edge.settings.retry_after_s,
            kind="validation_busy",
        ) from None
    except ChecksUnavailable:
        raise OpenAIError.unavailable(
            "The request could not be validated; retry after a moment.",
            edge.settings.retry_after_s,
            kind="validation_unavailable",
        ) from None
    except InvalidPart as exc:
        metrics.CHECKS.labels(exc.kind, "invalid").inc()
        raise OpenAIError.invalid(exc.message, exc.param) from None
    if fresh:
        metrics.CHECKS.labels("json_schema", "valid").inc()
    if canonical.images:
        metrics.CHECKS.labels("image", "valid").inc()
    for _, digest in fresh:
        edge.checked_schemas.add(digest)
