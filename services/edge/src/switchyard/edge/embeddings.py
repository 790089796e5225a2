"""The pipeline of POST /v1/embeddings, top to bottom.

authenticate → read and validate the body → resolve the model (404) → a ready backend
(503) → the model serves embeddings (400) → limits: inputs per request, and token-id
inputs within the model's context (400) → the response cache (a hit answers here) →
rate limits (429) → admission (429) → one `Embed` call for the whole batch, retried on
another endpoint while nothing was answered → the answer → the cache keeps it.

It shares the chat pipeline's steps (`switchyard.edge.pipeline`) and runs inside a
`Claim`, which answers errors, gives everything back and records the request once.

Vectors travel as little-endian float32 bytes end to end: `base64` sends those very
bytes; `float` writes each float32 as the float64 it widens to, so a client sees the same
numbers either way (the `openai` SDK asks for base64 and decodes it to float32).
"""

from __future__ import annotations

import array
import asyncio
import base64
import sys
import time
from typing import Any, Literal

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from switchyard.edge.admission import Refused
from switchyard.edge.auth import ApiKey
from switchyard.edge.claim import Claim
from switchyard.edge.errors import OpenAIError, from_inference
from switchyard.edge.exchange import Exchange
from switchyard.edge.pipeline import (
    Lookup,
    capable,
    held_until_ready,
    look_up,
    parse,
    read_body,
    ready,
    refused,
    request_id_of,
    reserve,
    reserve_hit,
    route_for,
)
from switchyard.edge.routing.affinity import embed_key, session_of
from switchyard.edge.routing.table import Route
from switchyard.edge.schemas import EmbeddingRequest
from switchyard.edge.state import EdgeState
from switchyard.inference.v1 import inference_pb2 as pb

API = "embeddings"
Format = Literal["float", "base64"]
_JSON_HEADERS = [(b"content-type", b"application/json")]
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
#: The same ratio as the chat estimate (`convert.estimate_prompt_tokens`): ~3 bytes a token.
_BYTES_PER_TOKEN = 3
#: Float answers with more values than this are encoded in a thread: 32 x 1024 floats take
#: ~1 ms (measured), so a 2048-input batch inline would stall the event loop ~60 ms. base64
#: is ~8x cheaper (one copy of the bytes) and always inline.
_INLINE_FLOATS = 32 * 1024


def handle(request: Request, edge: EdgeState) -> Response:
    """The route's answer: the pipeline, run when the server calls it with `send`."""
    return _Embeddings(request, edge)


class _Embeddings(Response):
    """A `Response` only so that FastAPI hands it to the server untouched (as chat's)."""

    def __init__(self, request: Request, edge: EdgeState) -> None:
        self.background = None
        self.request = request
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(
            request_id=request_id_of(self.request), api=API, started=time.perf_counter()
        )
        async with Claim(self.edge, exchange, receive, send) as claim:
            await _serve(self.request, claim)


async def _serve(request: Request, claim: Claim) -> None:
    edge, ex = claim.edge, claim.exchange
    settings = edge.settings
    deadline = asyncio.get_running_loop().time() + settings.request_timeout_s

    key = edge.keys.authenticate(request.headers.get("authorization"))
    if key is None:
        raise OpenAIError.unauthorized()
    ex.key_name, ex.tenant = key.name, key.tenant

    body = parse(EmbeddingRequest, await read_body(request, settings.max_body_bytes))
    ex.requested_model = body.model
    route = route_for(edge, key, body.model)
    ex.model = route.name
    ex.routed()
    ready(edge, route)
    capable(edge, route, body.model, pb.CAPABILITY_EMBEDDINGS)
    context = edge.pool.max_model_len(route)
    embed = embed_request(body, route.name, ex.request_id, settings.max_embedding_inputs, context)
    encoding: Format = body.encoding_format or "float"

    found = await _look_up(claim, key, route, request, embed)
    if found is not None and found.entry is not None:
        # A hit: one request for RPM, no tokens, no admission slot, no engine call.
        await reserve_hit(claim, key, route, found.entry.prompt_tokens, 0)
        await claim.respond(_JSON_HEADERS, await encode(found.entry, body.model, encoding))
        return

    estimate = estimate_tokens(embed)
    await reserve(claim, key, route, estimate, estimate)
    await claim.watch_client()  # from here on, a client that leaves ends the request
    route = await held_until_ready(claim, route, deadline)
    try:
        await claim.admit(route, key.priority)
    except Refused as refusal:
        raise refused(refusal, route.name, settings) from None

    session = session_of(request.headers, body.user)
    claim.affinity = embed_key(route.policy, embed, session, settings.affinity_prefix_chars)
    response = await _call(claim, embed, deadline)
    ex.used(response.prompt_tokens, 0)  # the engine's count, whatever comes next
    _check_answer(embed, response)
    await claim.respond(_JSON_HEADERS, await encode(response, body.model, encoding))
    if found is not None:
        await edge.cache.put(found.key, response.SerializeToString())


# -- the request ------------------------------------------------------------------------------


def embed_request(
    body: EmbeddingRequest, model: str, request_id: str, max_inputs: int, max_model_len: int
) -> pb.EmbedRequest:
    """The contract's request for `body` (400 past the limits the edge knows of: inputs per
    request, and token-id inputs within the model's context when it is known)."""
    inputs = body.inputs
    if len(inputs) > max_inputs:
        raise OpenAIError.invalid(
            f"input has {len(inputs)} items; at most {max_inputs} are allowed in one request.",
            param="input",
        )
    request = pb.EmbedRequest(request_id=request_id, model=model)
    if body.dimensions is not None:
        request.dimensions = body.dimensions
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            request.inputs.add(text=item)
            continue
        if max_model_len and len(item) > max_model_len:
            raise OpenAIError.invalid(
                f"input[{index}] has {len(item)} tokens, more than the model's maximum context "
                f"length of {max_model_len} tokens.",
                param="input",
                code="context_length_exceeded",
            )
        request.inputs.add().tokens.ids.extend(item)
    return request


def estimate_tokens(request: pb.EmbedRequest) -> int:
    """The tokens to reserve: exact for token ids, an upper-leaning guess for text."""
    total = 0
    for item in request.inputs:
        if item.HasField("tokens"):
            total += len(item.tokens.ids)
        else:
            total += len(item.text.encode()) // _BYTES_PER_TOKEN + 1
    return total


# -- the response cache -----------------------------------------------------------------------


async def _look_up(
    claim: Claim, key: ApiKey, route: Route, request: Request, embed: pb.EmbedRequest
) -> Lookup[pb.EmbedResponse] | None:
    """The cache's answer (embeddings are always deterministic); None when the request may
    not use the cache (see `pipeline.look_up`)."""
    if not claim.edge.cache.enabled:
        return None

    def read(entry: bytes) -> pb.EmbedResponse:
        stored = pb.EmbedResponse.FromString(entry)
        if len(stored.embeddings) != len(embed.inputs):
            raise ValueError("not this request's entry")  # a miss, rewritten by its answer
        return stored

    return await look_up(claim, key, route, request, embed, stream=False, read=read)


# -- the backend call, with retries before the answer -----------------------------------------


async def _call(claim: Claim, request: pb.EmbedRequest, deadline: float) -> pb.EmbedResponse:
    """One Embed call, tried on another endpoint when one is unavailable or overloaded (as
    unary Generate: nothing was answered yet, so nothing is duplicated)."""
    loop = asyncio.get_running_loop()
    retry_after_s = claim.edge.settings.retry_after_s
    error: OpenAIError | None = None
    while (endpoint := claim.next_endpoint()) is not None:
        try:
            response = await endpoint.stub.Embed(
                request,
                timeout=max(deadline - loop.time(), 0.001),
                metadata=endpoint.call_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            failure = claim.endpoint_failed(exc)
            error = from_inference(failure, retry_after_s)
            if failure.code == grpc.StatusCode.INVALID_ARGUMENT and "param" not in failure.metadata:
                error.param = "input"  # not chat's "messages": what the engine refused is input
            if failure.code not in _RETRYABLE:
                raise error from None
            continue
        claim.endpoint_answered()
        return response
    raise error or OpenAIError.unavailable(
        f"No backend for model '{claim.exchange.model}' is ready; retry after a moment.",
        retry_after_s,
    )


def _check_answer(request: pb.EmbedRequest, response: pb.EmbedResponse) -> None:
    """One whole float32 vector per input, of the dimensions asked for: anything else is an
    adapter bug, never passed on (502)."""
    sizes = {len(e.float32_le) for e in response.embeddings}
    wanted = {4 * request.dimensions} if request.HasField("dimensions") else None
    if (
        len(response.embeddings) != len(request.inputs)
        or len(sizes) != 1
        or 0 in sizes
        or any(size % 4 for size in sizes)
        or (wanted is not None and sizes != wanted)
    ):
        raise OpenAIError(
            502,
            "The backend answered embeddings that do not match the request.",
            type="server_error",
            code="backend_error",
            kind="backend_error",
        )


# -- the answer -------------------------------------------------------------------------------


async def encode(response: pb.EmbedResponse, model: str, encoding: Format) -> bytes:
    """OpenAI's `CreateEmbeddingResponse` body (in a thread when large: see _INLINE_FLOATS)."""
    floats = sum(len(e.float32_le) for e in response.embeddings) // 4
    if encoding == "float" and floats > _INLINE_FLOATS:
        return await asyncio.to_thread(answer_body, response, model, encoding)
    return answer_body(response, model, encoding)


def answer_body(response: pb.EmbedResponse, model: str, encoding: Format) -> bytes:
    vector = _floats if encoding == "float" else _base64
    data = [
        {"object": "embedding", "index": index, "embedding": vector(e.float32_le)}
        for index, e in enumerate(response.embeddings)
    ]
    tokens = response.prompt_tokens
    answer: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(answer)


def _floats(float32_le: bytes) -> list[float]:
    """Each float32, widened exactly to the float64 JSON writes (its shortest repr)."""
    values = array.array("f", float32_le)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def _base64(float32_le: bytes) -> str:
    return base64.b64encode(float32_le).decode("ascii")
