"""SGLang's own response models, from its release wheel, as the judge of the simulator's bodies.

`protocol.py` (pydantic) writes unary bodies and the chunks of the tool-call parser; its
`sse_utils.py` (msgspec) writes the role, reasoning, content, logprob-only and finish chunks,
leaving nulls out. A body is SGLang's exactly when one of them, fed its fields, writes the
same JSON back. The `openai` SDK's types must read every body too, as clients do.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import orjson
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.support.engine_wheels import (
    SGLANG_VERSION,
    import_from_wheel,
    sglang_models,
    wheel,
)


def protocol() -> ModuleType:
    return sglang_models().protocol


@cache
def sse_utils() -> ModuleType:
    return import_from_wheel(
        wheel("sglang", SGLANG_VERSION), "sglang.srt.entrypoints.openai.sse_utils"
    )


def _same(model: Any, body: dict[str, Any]) -> None:
    """`body` is what `model` (a pydantic class) writes for the fields it reads from it."""
    rewritten = orjson.loads(model.model_validate(body).model_dump_json())
    assert rewritten == body, f"{model.__name__} writes\n{rewritten}\nnot\n{body}"


def chat_response(body: dict[str, Any]) -> ChatCompletion:
    _same(protocol().ChatCompletionResponse, body)
    return ChatCompletion.model_validate(body)


def completion_response(body: dict[str, Any], *, sdk: bool = True) -> None:
    """`sdk`: the `openai` types read it too; not with `echo` logprobs, whose first prompt
    token has a null logprob (SGLang's models allow it, the SDK's are stricter)."""
    _same(protocol().CompletionResponse, body)
    if sdk:
        Completion.model_validate(body)


def chat_chunk(chunk: dict[str, Any]) -> ChatCompletionChunk:
    """A chat chunk, checked against whichever of SGLang's writers makes its kind."""
    # The usage chunk, and the tool parser's (text and calls: every field, a null role).
    if not chunk["choices"] or chunk["choices"][0]["delta"].get("role", "") is None:
        _same(protocol().ChatCompletionStreamResponse, chunk)
    else:
        (choice,) = chunk["choices"]
        written = sse_utils().build_sse_content(
            chunk_id=chunk["id"], created=chunk["created"], model=chunk["model"],
            index=choice["index"], **choice["delta"], finish_reason=choice["finish_reason"],
            logprobs=choice["logprobs"], matched_stop=choice["matched_stop"],
            usage=chunk.get("usage"),
        )  # fmt: skip
        assert orjson.loads(written.removeprefix("data: ")) == chunk
    return ChatCompletionChunk.model_validate(chunk)


def completion_chunk(chunk: dict[str, Any]) -> None:
    """(The SDK's `Completion` needs a finish reason: it reads stream chunks unvalidated.)"""
    if chunk["choices"]:
        _same(protocol().CompletionStreamResponse, chunk)
    else:  # the usage chunk leaves nulls out
        model = protocol().CompletionStreamResponse.model_validate(chunk)
        assert orjson.loads(model.model_dump_json(exclude_none=True)) == chunk


def embedding_response(body: dict[str, Any]) -> CreateEmbeddingResponse | None:
    """An `/v1/embeddings` body, checked against SGLang's `EmbeddingResponse`; with float
    vectors, the `openai` SDK's type reads it too (base64 ones it decodes itself)."""
    _same(protocol().EmbeddingResponse, body)
    if all(isinstance(item["embedding"], list) for item in body["data"]):
        return CreateEmbeddingResponse.model_validate(body)
    return None


def embedding_request(body: dict[str, Any]) -> None:
    """A request body SGLang's `EmbeddingRequest` accepts."""
    protocol().EmbeddingRequest.model_validate(body)
