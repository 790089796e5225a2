"""Canonical embedding requests (the contract's EmbedRequest), their vectors, and an engine
that answers the embedding routes, for tests."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from switchyard.adapter.translation import EngineHTTPError
from switchyard.inference.v1 import inference_pb2 as pb


def embed_request(
    model: str,
    *inputs: str | Sequence[int],
    dimensions: int | None = None,
    request_id: str = "",
) -> pb.EmbedRequest:
    """A request of `inputs`: each a text, or a sequence of token ids."""
    request = pb.EmbedRequest(request_id=request_id, model=model)
    for item in inputs:
        if isinstance(item, str):
            request.inputs.add(text=item)
        else:
            request.inputs.add(tokens=pb.TokenIds(ids=list(item)))
    if dimensions is not None:
        request.dimensions = dimensions
    return request


def float32_le(values: Sequence[float]) -> bytes:
    """`values` as the contract carries a vector: little-endian float32."""
    return struct.pack(f"<{len(values)}f", *values)


def floats(vector: bytes) -> list[float]:
    """The float32 values of a contract vector."""
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))


class AnsweringEngine:
    """An in-memory `EngineHTTP` whose routes answer JSON or fail with an `EngineHTTPError`
    (e.g. vLLM's 404 for a route it did not register); every call is recorded."""

    def __init__(self, answers: Mapping[tuple[str, str], Any]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[str, str, Any]] = []

    def _answer(self, method: str, path: str, body: Any) -> Any:
        self.calls.append((method, path, body))
        answer = self.answers.get((method, path), EngineHTTPError(f"{method} {path}: 404", 404))
        if isinstance(answer, EngineHTTPError):
            raise answer
        return answer

    async def get_json(self, path: str) -> Any:
        return self._answer("GET", path, None)

    async def post_json(self, path: str, body: Any) -> Any:
        return self._answer("POST", path, body)


def refusal(status: int) -> EngineHTTPError:
    """What the engine client raises for an answer of HTTP `status`."""
    return EngineHTTPError(f"HTTP {status}", status)


def embedding_answer(*vectors: Sequence[float], prompt_tokens: int = 1) -> dict[str, Any]:
    """An OpenAI `/v1/embeddings` answer with base64 vectors, as vLLM and SGLang send it."""
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(float32_le(v)).decode(),
            }
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
