"""SGLang 0.5.23's embeddings, for a server started with `--is-embedding`.

`POST /v1/embeddings` (`entrypoints/openai/serving_embedding.py`) and the native
`POST|PUT /encode` (`http_server.py:encode_request`) both become an `EmbeddingReqInput`:

- `input` is a string, a list of strings, a list of token ids or a list of token-id lists;
  a list is a batch, one request per input, each with its own rid. The OpenAI route first
  checks `_validate_request`'s rules (encoding_format, empty or whitespace-only input,
  negative ids), then the tokenizer manager checks each input in turn
  (`_validate_one_request`): its length against the context, that the model embeds, and
  `dimensions` against the model's matryoshka config (`_validate_for_matryoshka_dim`).
  Every refusal is a 400; the flat `ErrorResponse` on the OpenAI route, `{"error":
  {"message"}}` on `/encode`.
- Vectors are the pooled hidden state, cut to `dimensions` and normalized. The OpenAI
  route answers `EmbeddingResponse` with `model` set to the server's `--model-path` (not
  the served name), each vector as floats or, with `encoding_format: "base64"`, as the
  base64 of its little-endian float32 bytes, and usage `prompt_tokens` summed over the
  inputs (`completion_tokens` 0). `/encode` answers `{"embedding", "meta_info"}` per
  input (a list for a batch).
- A batch's inputs are separate requests that the scheduler prefills together: here they
  are admitted together and prefilled concurrently, so a batch costs one prefill step, and
  the metrics count one request per input (prompt tokens, no generation tokens).

What SGLang does not check, the simulator refuses with its tokenizer's own error (400):
token ids outside the vocabulary, which would fail on the real engine's GPU, and an empty
list of token ids, which the real engine would send to its model.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from switchyard.enginesim import embedding, tokenizer
from switchyard.enginesim.generation import LARGE_TEXT, off_loop
from switchyard.enginesim.sglang.wire import DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from switchyard.enginesim.sglang.engine import Engine

#: An embedding request's finish: the scheduler's FINISH_LENGTH of its 0 new tokens.
FINISHED: Final = {"type": "length", "length": 0}
#: Inputs above this many tokens in all are embedded off the event loop.
_LARGE_EMBEDDING: Final = 2048


class MultimodalEmbeddingInput(BaseModel):
    text: str | None = None
    image: str | None = None
    video: str | None = None


class EmbeddingRequest(BaseModel):
    """SGLang's `EmbeddingRequest` (`protocol.py`), the fields the simulator reads."""

    input: list[int] | list[list[int]] | str | list[str] | list[MultimodalEmbeddingInput]
    model: str = DEFAULT_MODEL_NAME
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None
    rid: list[str] | str | None = None
    priority: int | None = None


class EncodeRequest(BaseModel):
    """The `EmbeddingReqInput` fields `/encode` reads (a dataclass body in SGLang)."""

    text: list[str] | str | None = None
    input_ids: list[list[int]] | list[int] | None = None
    rid: list[str] | str | None = None
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Input:
    """One input of an embedding request: a text or token ids, and its rid."""

    rid: str
    text: str | None
    ids: Sequence[int] | None


@dataclass(frozen=True, slots=True)
class Embedded:
    """One input's result."""

    rid: str
    vector: embedding.Vector
    prompt_tokens: int
    e2e_latency: float


class InternalError(Exception):
    """What SGLang's handler answers with a 500 ("Internal server error: ...")."""


def check(body: EmbeddingRequest) -> str | None:
    """`OpenAIServingEmbedding._validate_request`: the message of a refusal, or None."""
    if body.encoding_format not in ("float", "base64"):
        return f"encoding_format must be either 'float' or 'base64', got {body.encoding_format!r}"
    value = body.input
    if not value:
        return "Input cannot be empty"
    if isinstance(value, str):
        return "Input cannot be empty or whitespace only" if not value.strip() else None
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                return "All items in input list must be strings"
            if not item.strip():
                return f"Input at index {i} cannot be empty or whitespace only"
    elif isinstance(first, int):
        for i, item in enumerate(value):
            if not isinstance(item, int):
                return "All items in input list must be integers"
            if item < 0:
                return f"Token ID at index {i} must be non-negative"
    return None


def inputs(
    text: str | list[str] | None, ids: list[int] | list[list[int]] | None, rid: object
) -> tuple[list[Input], bool]:
    """(the inputs, whether a batch), as `EmbeddingReqInput.normalize_batch_and_arguments`
    splits them; ValueError or InternalError as SGLang raises them."""
    if text is None and ids is None:
        raise ValueError(
            "At least one of text, input_ids, image, video, or audio should be provided"
        )
    if text is not None and ids is not None:
        raise ValueError("text and input_ids cannot be provided at the same time")
    items: list[tuple[str | None, Sequence[int] | None]]
    if isinstance(text, str):
        items, batch = [(text, None)], False
    elif text is not None:
        items, batch = [(t, None) for t in text], True
    elif ids and isinstance(ids[0], list):
        items, batch = [(None, i) for i in ids if isinstance(i, list)], True
    else:
        items, batch = [(None, [i for i in ids or [] if isinstance(i, int)])], False
    if not batch:
        rids = [rid if isinstance(rid, str) and rid else uuid.uuid4().hex]
    elif rid is None:
        rids = [uuid.uuid4().hex for _ in items]
    elif not isinstance(rid, list):  # SGLang asserts it
        raise InternalError("The rid should be a list.")
    elif len(rid) < len(items):  # SGLang indexes past its end
        raise InternalError("list index out of range")
    else:
        rids = [str(r) for r in rid[: len(items)]]
        if len(set(rids)) != len(rids):
            duplicates = list(dict.fromkeys(r for r in rids if rids.count(r) > 1))
            raise ValueError(f"Duplicate request IDs detected within the request: {duplicates}")
    return [Input(r, t, i) for r, (t, i) in zip(rids, items, strict=True)], batch


def openai_inputs(body: EmbeddingRequest) -> tuple[list[Input], bool]:
    """`_convert_to_internal_request`: strings are text, anything else token ids."""
    value = body.input
    if isinstance(value, list) and value and isinstance(value[0], MultimodalEmbeddingInput):
        raise ValueError("The SGLang simulator embeds text and token ids, not images or videos")
    if isinstance(value, str) or (value and isinstance(value[0], str)):
        texts = [v for v in value if isinstance(v, str)] if isinstance(value, list) else value
        return inputs(texts, None, body.rid)
    ids: Any = value
    return inputs(None, ids, body.rid)


class Embedder:
    """Checks, schedules and embeds the inputs of one request on an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config

    async def tokens(self, item: Input, dimensions: int | None) -> list[int]:
        """The input's token ids, checked as the tokenizer manager checks a request."""
        if item.ids is not None:
            ids = list(item.ids)
            await off_loop(len(ids) > LARGE_TEXT, tokenizer.decode, ids)  # ValueError: not in vocab
        else:
            text = str(item.text)
            ids = await off_loop(len(text) > LARGE_TEXT, tokenizer.encode, text)
        if not ids:
            raise ValueError("The SGLang simulator cannot embed an empty input")
        return self._fit(ids, dimensions)

    def _fit(self, ids: list[int], dimensions: int | None) -> list[int]:
        """`_validate_one_request`'s rules for an embedding (in its order), then the
        scheduler's truncation under --allow-auto-truncate."""
        c = self.config
        context = c.context_length
        if len(ids) >= context:
            if not c.allow_auto_truncate:
                raise ValueError(
                    f"The input ({len(ids)} tokens) is longer than the "
                    f"model's context length ({context} tokens)."
                )
            ids = ids[:context]
        if c.is_generation:
            raise ValueError(
                "This model does not appear to be an embedding model by default. "
                "Please add `--is-embedding` when launching the server or try another model."
            )
        self._check_dimensions(dimensions)
        # The scheduler's `validate_input_length` (max_req_input_len = context - 1 - 5)
        # truncates under --allow-auto-truncate; without it, an embedding goes on anyway.
        longest = context - 1 - 5
        if c.allow_auto_truncate and len(ids) >= longest:
            ids = ids[:longest]
        return ids

    def _check_dimensions(self, dimensions: int | None) -> None:
        """`_validate_for_matryoshka_dim`."""
        if dimensions is None:
            return
        c = self.config
        if not c.is_matryoshka:
            raise ValueError(
                f"Model '{c.model_path}' does not support matryoshka representation, "
                "changing output dimensions will lead to poor results."
            )
        if dimensions < 1:
            raise ValueError("Requested dimensions must be greater than 0")
        allowed = c.matryoshka_dimensions
        if allowed and dimensions not in allowed:
            raise ValueError(
                f"Model '{c.model_path}' only supports {allowed} matryoshka dimensions, "
                "using other output dimensions will lead to poor results."
            )
        if dimensions > c.hidden_size:
            raise ValueError(
                f"Provided dimensions are greater than max embedding dimension: {c.hidden_size}"
            )

    async def run(
        self, items: Sequence[Input], dimensions: int | None, traceparent: str | None
    ) -> list[Embedded]:
        """Every input's vector, in order. Raises ValueError (a 400) for the first input
        refused; no input runs then."""
        engine, c = self.engine, self.config
        engine.hold([item.rid for item in items])  # ValueError: a rid already in flight
        try:
            checked = [await self.tokens(item, dimensions) for item in items]
            arrived = time.perf_counter()
            tasks = [
                asyncio.create_task(self._prefill(item.rid, ids, traceparent))
                for item, ids in zip(items, checked, strict=True)
            ]
            try:
                await asyncio.gather(*tasks)
            except asyncio.CancelledError:  # the client went away: SGLang aborts each rid
                for item, task in zip(items, tasks, strict=True):
                    if task.cancelled() or not task.done():  # gather cancelled it first
                        engine.abort(item.rid, "disconnect")
                raise
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for item in items:
                engine.release(item.rid)
        heavy = sum(len(ids) for ids in checked) > _LARGE_EMBEDDING
        vectors = await off_loop(heavy, _vectors, c.model_path, checked, c.hidden_size, dimensions)
        e2e = time.perf_counter() - arrived
        if engine.metrics is not None:  # each input a request; its vector the first token
            for ids in checked:
                engine.metrics.token(False, e2e, True)
                engine.metrics.finished(False, len(ids), 0, e2e)
        return [
            Embedded(item.rid, vector, len(ids), e2e)
            for item, ids, vector in zip(items, checked, vectors, strict=True)
        ]

    async def _prefill(self, rid: str, ids: list[int], traceparent: str | None) -> None:
        """One input's turn in the engine: admitted, then prefilled (no token generated)."""
        engine = self.engine
        with engine.stats.track(rid, traceparent):
            await engine.scheduler.wait_loaded()
            async with engine.scheduler.admit(len(ids)):
                engine.used_tokens += len(ids)
                try:
                    if engine.scheduler.faults.claim(1) is not None:  # stalled before its output
                        await engine.scheduler.faults.stall()
                    await engine.scheduler.sleep_generation(0, len(ids))
                finally:
                    engine.used_tokens -= len(ids)


def _vectors(
    model: str, inputs: Sequence[Sequence[int]], hidden: int, dimensions: int | None
) -> list[embedding.Vector]:
    """The pooled vectors, cut to `dimensions` and normalized again (SGLang's pooler)."""
    vectors = [embedding.embed(model, ids, hidden) for ids in inputs]
    if dimensions is None:
        return vectors
    return [embedding.shortened(v, dimensions) for v in vectors]


def encoded(vector: embedding.Vector, encoding_format: str) -> list[float] | str:
    """`_serialize_embedding`: floats, or base64 of the little-endian float32 bytes."""
    if encoding_format == "float":
        return [float(x) for x in vector.tolist()]
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def openai_response(
    results: Sequence[Embedded], model_path: str, encoding_format: str
) -> dict[str, Any]:
    """`_build_embedding_response`, as FastAPI writes the pydantic model (nulls kept)."""
    prompt_tokens = sum(r.prompt_tokens for r in results)
    return {
        "data": [
            {"embedding": encoded(r.vector, encoding_format), "index": i, "object": "embedding"}
            for i, r in enumerate(results)
        ],
        "model": model_path,
        "object": "list",
        "usage": {
            "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens,
            "completion_tokens": 0, "prompt_tokens_details": None, "reasoning_tokens": 0,
            "completion_tokens_details": None,
        },
    }  # fmt: skip


def native_output(result: Embedded) -> dict[str, Any]:
    """One input's `/encode` output: its vector and the tokenizer manager's meta_info."""
    return {
        "embedding": [float(x) for x in result.vector.tolist()],
        "meta_info": {
            "id": result.rid, "finish_reason": dict(FINISHED),
            "prompt_tokens": result.prompt_tokens, "weight_version": "default",
            "num_retractions": 0, "e2e_latency": result.e2e_latency,
            "response_sent_to_client_ts": time.time(),
        },
    }  # fmt: skip
