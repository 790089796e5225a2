"""Embeddings in OpenAI's `/v1/embeddings` shape, as vLLM and SGLang take and answer them:
the inputs as one `input` list, the answer's `data[i].embedding` as base64 of little-endian
float32 (what both engines send for `encoding_format: "base64"`) or, from an engine that
answered floats, a list of numbers packed here into the same bytes.

Each engine's own fields (vLLM's `embed_dtype` / `endianness`, SGLang's `rid` list) stay in
its translation.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from switchyard.adapter.translation import Embeddings
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb


def inputs_json(request: pb.EmbedRequest) -> list[str] | list[list[int]]:
    """The (validated: all of one kind) inputs as OpenAI's `input`: always a list, of texts
    or of token-id lists, so that one input and many read alike in every engine."""
    if request.inputs[0].WhichOneof("kind") == "tokens":
        return [list(i.tokens.ids) for i in request.inputs]
    return [i.text for i in request.inputs]


def _vector(raw: Any) -> bytes:
    """One `embedding`: base64 of float32 LE, or a list of floats (packed as float32 LE)."""
    if isinstance(raw, str):
        try:
            vector = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise InferenceError.engine_failed(
                "the engine sent an embedding that is not base64"
            ) from None
    elif isinstance(raw, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in raw
    ):
        # The engine's floats are float32 values printed as JSON numbers: packing them back
        # as float32 gives the exact bytes.
        vector = struct.pack(f"<{len(raw)}f", *raw)
    else:
        raise InferenceError.engine_failed("the engine sent an embedding of an unexpected type")
    if not vector or len(vector) % 4:
        raise InferenceError.engine_failed(
            f"the engine sent an embedding of {len(vector)} bytes, not whole float32 values"
        )
    return vector


def read_embeddings(body: Any, count: int) -> Embeddings:
    """`{"data": [{"index", "embedding"}], "usage": {"prompt_tokens"}}` → `count` vectors,
    in input order (by `index`)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise InferenceError.engine_failed("the engine's embedding response has no data list")
    vectors: dict[int, bytes] = {}
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise InferenceError.engine_failed("the engine sent an embedding that is not an object")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or index in vectors:
            raise InferenceError.engine_failed(f"the engine sent an embedding at index {index!r}")
        vectors[index] = _vector(item.get("embedding"))
    if len(vectors) != count:
        raise InferenceError.engine_failed(
            f"the engine sent {len(vectors)} embeddings for {count} inputs"
        )
    usage = body.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(
        vectors=tuple(vectors[i] for i in range(count)),
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) and prompt_tokens >= 0 else 0,
    )


def dimensions_of(body: Any) -> int:
    """The length of the first vector of an embedding response (a readiness probe's)."""
    vectors = read_embeddings(body, 1).vectors
    return len(vectors[0]) // 4
