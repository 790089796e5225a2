"""vLLM 0.33's `/v1/embeddings` for a pooling model: the request, its checks, the answer.

The request is `EmbeddingCompletionRequest` (`entrypoints/pooling/embed/protocol.py` and
the mixins of `pooling/base/protocol.py`); vLLM's chat forms of the request (`messages`)
are not simulated. Each input is tokenized and checked as vLLM's renderer does
(`renderers/params.py:TokenizeParams`, with `max_output_tokens=0`: the whole context is
input), then `dimensions` is checked (`PoolingParams._set_default_parameters`), then each
input as its engine request is added (`InputProcessor._validate_model_input`: an empty
prompt, token ids outside the vocabulary). The simulated tokenizer adds no special tokens,
so an empty string is an empty prompt, which vLLM refuses; a model whose tokenizer adds
some (BERT's [CLS]/[SEP]) would embed it.

Vectors are float32. `encoding_format` "float" writes them as orjson writes a float32
array (vLLM's `create_json_response`); "base64" and the binary "bytes"/"bytes_only" are
the raw values in `embed_dtype` and `endianness` (`utils/serial_utils.py:tensor2binary`).
Unknown fields are accepted, and so is any `model` name: vLLM's pooling `_check_model`
refuses none.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import Field, model_validator
from starlette.responses import Response

from switchyard.enginesim import embedding, tokenizer
from switchyard.enginesim.generation import encode
from switchyard.enginesim.vllm.errors import InvalidRequest, VllmError
from switchyard.enginesim.vllm.flags import Config
from switchyard.enginesim.vllm.wire import INT64_MAX, INT64_MIN, OpenAIBaseModel

EmbedDType = Literal["float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2"]
Endianness = Literal["native", "big", "little"]
#: Characters one token can hold at most: vLLM's `tokenizer.max_chars_per_token`.
MAX_CHARS_PER_TOKEN: Final = max(len(tokenizer.token_text(i)) for i in range(tokenizer.CHAR_BASE))
_REMOVED_TASKS: Final = {
    "score": "`score` task was removed; use `classify` instead.",
    "encode": "`encode` task was removed; use `token_embed` or `token_classify` instead.",
}
_MAX_CACHE_SALT: Final = 128
_CACHE_SALT_FORBIDDEN: Final = frozenset("@/\\\x00")


def _request_id() -> str:
    """vLLM's `random_uuid`: 16 hex digits."""
    return f"{uuid.uuid4().int & (2**64 - 1):016x}"


class EmbeddingRequest(OpenAIBaseModel):
    """`EmbeddingCompletionRequest`: an input, or a batch of them, as text or token ids."""

    model: str | None = None
    user: str | None = None
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    padding: Literal["max_length", "do_not_pad"] | None = None
    truncation_side: Literal["left", "right"] | None = None
    request_id: str = Field(default_factory=_request_id)
    priority: int = Field(default=0, ge=INT64_MIN, le=INT64_MAX)
    mm_processor_kwargs: dict[str, Any] | None = None
    cache_salt: str | None = Field(default=None, min_length=1, max_length=1024)
    input: list[int] | list[list[int]] | str | list[str]
    add_special_tokens: bool = True
    encoding_format: Literal["float", "base64", "bytes", "bytes_only"] = "float"
    embed_dtype: EmbedDType = "float32"
    endianness: Endianness = "native"
    dimensions: int | None = None
    use_activation: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _removed_and_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "normalize" in data:  # `reject_removed_pooling_parameters`
                raise InvalidRequest(
                    "Parameter `normalize` was removed; use `use_activation` instead.",
                    parameter="normalize",
                )
            task = data.get("task")
            if isinstance(task, str) and task in _REMOVED_TASKS:
                raise InvalidRequest(_REMOVED_TASKS[task], parameter="task")
            _check_cache_salt(data.get("cache_salt"))
            if "messages" in data:
                raise InvalidRequest(
                    "chat embedding requests are not supported by the simulator",
                    parameter="messages",
                )
        return data


def _check_cache_salt(salt: object) -> None:
    """`validate_cache_salt`, before the fields are validated."""
    if salt is None:
        return
    if not isinstance(salt, str) or not salt:
        raise InvalidRequest(
            "Parameter 'cache_salt' must be a non-empty string if provided.",
            parameter="cache_salt",
        )
    if len(salt) > _MAX_CACHE_SALT or not _CACHE_SALT_FORBIDDEN.isdisjoint(salt):
        raise InvalidRequest(
            f"Parameter 'cache_salt' must be at most {_MAX_CACHE_SALT} characters and must "
            "not contain '@', '/', '\\\\', or NUL.",
            parameter="cache_salt",
        )


def prompts(raw: list[int] | list[list[int]] | str | list[str]) -> list[str | list[int]]:
    """The request's inputs (`prompt_to_seq`): one string, one id list, or a list of either."""
    if isinstance(raw, str) or (raw and all(isinstance(p, int) for p in raw)):
        return [raw]  # type: ignore[list-item]
    return [p for p in raw if isinstance(p, str | list)]


async def token_ids(req: EmbeddingRequest, config: Config) -> list[list[int]]:
    """Each input's token ids, checked against the context as vLLM's renderer does."""
    limit = config.max_model_len
    truncate = req.truncate_prompt_tokens
    if truncate is not None and truncate > limit:  # `PoolingBaseServing._validate_request`
        raise VllmError(
            "truncate_prompt_tokens value is greater than max_model_len. "
            "Please request a smaller truncation size."
        )
    inputs = prompts(req.input)
    if not inputs:
        raise VllmError("You must pass at least one prompt")
    return [await _tokens(p, req, limit) for p in inputs]


async def _tokens(prompt: str | list[int], req: EmbeddingRequest, limit: int) -> list[int]:
    truncate, side = req.truncate_prompt_tokens, req.truncation_side
    keep = limit if truncate is not None and truncate < 0 else truncate  # -1: the whole context
    if isinstance(prompt, str):
        max_chars = limit * MAX_CHARS_PER_TOKEN
        if len(prompt) > max_chars:
            if truncate is None:  # refused before tokenizing (`_text_len_check`)
                raise InvalidRequest(
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"prompt contains {len(prompt)} characters (more than {max_chars} "
                    f"characters, which is the upper bound for {limit} input tokens). "
                    "Please reduce the length of the input prompt.",
                    parameter="input_text",
                    value=len(prompt),
                )
            if side is not None:
                prompt = prompt[-max_chars:] if side == "left" else prompt[:max_chars]
        ids = await encode(prompt)
        if keep is None or side is None:
            # The tokenizer truncates (on the right): to `keep`, else to one past the
            # limit, which is all the length check needs to know.
            ids = ids[: limit + 1 if keep is None else keep]
    else:
        ids = list(prompt)
    if keep is not None and keep < len(ids):
        ids = ids[-keep:] if side == "left" and keep else ids[:keep]
    if len(ids) > limit:
        at_least = "at least " if len(ids) == limit + 1 else ""
        raise InvalidRequest(
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains {at_least}{len(ids)} input tokens, which exceeds this limit even "
            "without any output tokens. Please reduce the length of the input prompt.",
            parameter="input_tokens",
            value=len(ids),
        )
    return ids


def check_dimensions(dimensions: int | None, config: Config) -> None:
    """`dimensions` as the model allows it (`PoolingParams._set_default_parameters`)."""
    if dimensions is None:
        return
    name, size = config.model_name, config.embedding_size
    if not config.is_matryoshka:
        raise VllmError(
            f"Model {name!r} does not support Matryoshka embeddings; dimensions must be "
            f"unset (received dimensions={dimensions})."
        )
    if not 1 <= dimensions <= size:
        raise VllmError(
            f"Model {name!r} only supports dimensions in range [1, {size}], got {dimensions}."
        )
    allowed = config.matryoshka_dimensions
    if allowed is not None and dimensions not in allowed:
        raise VllmError(
            f"Model {name!r} only supports Matryoshka dimensions {allowed}, got {dimensions}."
        )


def check_prompt(ids: Sequence[int]) -> None:
    """An input as the engine takes it: not empty, every id in the vocabulary."""
    if not ids:
        raise VllmError("The decoder prompt cannot be empty")
    if min(ids) < 0:
        raise VllmError(f"Token id {min(ids)} is out of vocabulary")
    if max(ids) >= tokenizer.VOCAB_SIZE:
        raise VllmError(f"Token id {max(ids)} is out of vocabulary")


def vectors(
    model: str, inputs: Sequence[Sequence[int]], size: int, dimensions: int | None
) -> list[embedding.Vector]:
    """The pooled vector of each input: `size` floats, or the first `dimensions`
    renormalized (vLLM slices, then its pooler normalizes)."""
    full = [embedding.embed(model, ids, size) for ids in inputs]
    if dimensions is None or dimensions == size:
        return full
    return [embedding.shortened(v, dimensions) for v in full]


# --- what vLLM answers ---------------------------------------------------------------------


def _minifloat(values: npt.NDArray[np.float32], exponent_bits: int, mantissa_bits: int) -> bytes:
    """`values` as 8-bit floats (fp8: sign, exponent, mantissa), rounded to nearest even,
    as torch converts. Unit vectors never reach the formats' largest values."""
    bias = 2 ** (exponent_bits - 1) - 1
    x = np.abs(values.astype(np.float64))
    # Below the smallest normal number every step is the subnormal one; above it, the step
    # of the value's binade. Rounding in steps carries into the exponent by itself.
    _, exponent = np.frexp(x)
    binade = np.maximum(exponent - 1, 1 - bias)
    step = np.ldexp(1.0, binade - mantissa_bits)
    steps = np.rint(x / step)  # numpy rounds halves to even
    rounded = steps * step
    _, exponent = np.frexp(np.where(rounded > 0, rounded, 1.0))
    normal = rounded >= np.ldexp(1.0, 1 - bias)
    field = np.where(normal, exponent - 1 + bias, 0)
    mantissa = np.where(
        normal, np.rint(rounded / np.ldexp(1.0, exponent - 1 - mantissa_bits)) - 2**mantissa_bits,
        steps,
    )  # fmt: skip
    sign = np.signbit(values).astype(np.uint8) << 7
    codes = sign | (field.astype(np.uint8) << mantissa_bits) | mantissa.astype(np.uint8)
    return bytes(codes.astype(np.uint8).tobytes())


def binary(vector: embedding.Vector, dtype: EmbedDType, endianness: Endianness) -> bytes:
    """The vector's bytes in `dtype` (`tensor2binary`): fp8 is one byte per value, which
    no byte order changes; bfloat16 is float32 rounded to its top 16 bits."""
    if dtype == "fp8_e4m3":
        return _minifloat(vector, 4, 3)
    if dtype == "fp8_e5m2":
        return _minifloat(vector, 5, 2)
    if dtype == "bfloat16":
        bits = vector.astype(np.float32).view(np.uint32).astype(np.uint64)
        array: npt.NDArray[Any] = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    else:
        array = vector.astype(np.float32 if dtype == "float32" else np.float16)
    order = sys.byteorder if endianness == "native" else endianness
    return array.astype(array.dtype.newbyteorder("<" if order == "little" else ">")).tobytes()


def usage(prompt_tokens: int) -> dict[str, Any]:
    """`UsageInfo` as pooling fills it: prompt tokens only."""
    return {
        "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0,
        "prompt_tokens_details": None, "completion_tokens_details": None,
    }  # fmt: skip


def response(
    head: dict[str, Any], req: EmbeddingRequest, found: Sequence[embedding.Vector],
    prompt_tokens: int,
) -> Response:  # fmt: skip
    """The answer in the request's `encoding_format`; `head`: id, created, model."""
    fmt, dtype, order = req.encoding_format, req.embed_dtype, req.endianness
    if fmt in ("bytes", "bytes_only"):
        return _bytes_response(head, req, found, prompt_tokens)
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(found):
        value: Any = vector
        if fmt == "base64":
            value = base64.b64encode(binary(vector, dtype, order)).decode()
        data.append({"index": index, "object": "embedding", "embedding": value})
    body = {
        "id": head["id"], "object": "list", "created": head["created"], "model": head["model"],
        "data": data, "usage": usage(prompt_tokens),
    }  # fmt: skip
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json")


def _bytes_response(
    head: dict[str, Any], req: EmbeddingRequest, found: Sequence[embedding.Vector],
    prompt_tokens: int,
) -> Response:  # fmt: skip
    """`build_pooling_bytes_streaming_response`: the vectors' bytes back to back, and
    (for "bytes") where each lies in a `metadata` header."""
    chunks = [binary(v, req.embed_dtype, req.endianness) for v in found]
    headers = None
    if req.encoding_format == "bytes":
        items, offset = [], 0
        for index, (vector, chunk) in enumerate(zip(found, chunks, strict=True)):
            items.append(
                {
                    "index": index, "embed_dtype": req.embed_dtype,
                    "endianness": req.endianness, "start": offset,
                    "end": offset + len(chunk), "shape": list(vector.shape),
                }
            )  # fmt: skip
            offset += len(chunk)
        metadata = {
            "id": head["id"], "created": head["created"], "model": head["model"], "data": items,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }  # fmt: skip
        headers = {"metadata": json.dumps(metadata)}
    return Response(b"".join(chunks), headers=headers, media_type="application/octet-stream")
