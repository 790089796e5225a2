"""The vLLM translation's embeddings: the body vLLM 0.33.0 takes, the vectors it answers, what
the model serves (read from the routes vLLM registered), and its refusals.

vLLM's request model imports torch (out of reach), so the fields below are the ones read in
`vllm/entrypoints/pooling/embed/protocol.py` (`EmbeddingCompletionRequest`) and the mixins
of `pooling/base/protocol.py` it is made of, with their literal types; vLLM accepts and
ignores other keys (OpenAIBaseModel), which is why every key sent must be among them.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import grpc
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from switchyard.adapter import translation as base
from switchyard.adapter_vllm.translation import COMPLETIONS, EMBEDDINGS, MODELS, VllmTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.embeddings import (
    AnsweringEngine,
    embed_request,
    embedding_answer,
    float32_le,
    refusal,
)
from tests.support.request_matrix import EmbedCase, embed_matrix, on_the_wire

T = VllmTranslation("qwen")


class VllmEmbeddingRequest(BaseModel):
    """vLLM 0.33.0's `EmbeddingCompletionRequest` fields (OpenAI's, then vLLM's extras)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    user: str | None = None
    input: list[int] | list[list[int]] | str | list[str]
    encoding_format: Literal["float", "base64", "bytes", "bytes_only"] = "float"
    dimensions: int | None = None
    truncate_prompt_tokens: int | None = None
    padding: Literal["max_length", "do_not_pad"] | None = None
    truncation_side: Literal["left", "right"] | None = None
    request_id: str | None = None
    priority: int = 0
    mm_processor_kwargs: dict[str, Any] | None = None
    cache_salt: str | None = None
    add_special_tokens: bool = True
    embed_dtype: Literal["float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2"] = "float32"
    endianness: Literal["native", "big", "little"] = "native"
    use_activation: bool | None = None


@pytest.mark.parametrize("case", embed_matrix(), ids=str)
def test_vllm_takes_every_embedding_body_the_adapter_sends(case: EmbedCase) -> None:
    call = T.embed_request(case.request)
    assert call.path == EMBEDDINGS
    body = VllmEmbeddingRequest.model_validate(on_the_wire(call.body))
    # The exact float32 values, whatever the host's byte order.
    assert (body.encoding_format, body.embed_dtype, body.endianness) == (
        "base64",
        "float32",
        "little",
    )
    assert body.model == "qwen"
    assert body.request_id == "r-1"
    assert body.dimensions == (
        case.request.dimensions if case.request.HasField("dimensions") else None
    )
    # All inputs in one call, as a list whatever their number (never truncated by vLLM).
    expected = [
        i.text if i.WhichOneof("kind") == "text" else list(i.tokens.ids)
        for i in case.request.inputs
    ]
    assert body.input == expected
    assert body.truncate_prompt_tokens is None


def test_the_body_model_refuses_what_vllm_refuses() -> None:
    """The check can fail: an unknown encoding, a key vLLM does not read."""
    with pytest.raises(ValidationError, match="encoding_format"):
        VllmEmbeddingRequest.model_validate({"input": ["a"], "encoding_format": "int8"})
    with pytest.raises(ValidationError, match="normalize"):
        VllmEmbeddingRequest.model_validate({"input": ["a"], "normalize": True})


def test_vectors_are_the_engine_s_exact_float32_bytes_in_input_order() -> None:
    first, second = [0.1, -2.5, 3.4028234663852886e38], [1e-45, 0.0, -0.0]
    answer = embedding_answer(first, second, prompt_tokens=9)
    answer["data"].reverse()  # order comes from `index`
    result = T.embeddings(embed_request("qwen", "a", "b"), answer)
    assert result.vectors == (float32_le(first), float32_le(second))
    assert result.prompt_tokens == 9


def test_float_vectors_are_packed_to_the_same_bytes() -> None:
    """An answer in floats (an engine that ignored base64) reads as the same float32 bytes."""
    exact = float32_le([0.1, -2.5])
    floats = orjson.loads(orjson.dumps([float(x) for x in memoryview(exact).cast("f")]))
    answer = {"data": [{"index": 0, "embedding": floats}], "usage": {"prompt_tokens": 2}}
    assert T.embeddings(embed_request("qwen", "a"), answer).vectors == (exact,)


@pytest.mark.parametrize(
    "data",
    [
        [],
        [{"index": 0, "embedding": "AAAA"}, {"index": 0, "embedding": "AAAA"}],
        [{"index": 0, "embedding": "AAA"}],  # 2 bytes
        [{"index": 0, "embedding": "not base64!"}],
        [{"index": 0, "embedding": {"x": 1}}],
    ],
    ids=["none", "index-twice", "partial-float", "not-base64", "not-a-vector"],
)
def test_an_answer_that_is_not_one_vector_per_input_is_the_engine_s_failure(
    data: list[Any],
) -> None:
    with pytest.raises(InferenceError) as caught:
        T.embeddings(embed_request("qwen", "a"), {"data": data, "usage": {"prompt_tokens": 1}})
    assert caught.value.reason == pb.ENGINE_ERROR


def _models(root: str = "/models/qwen") -> dict[str, Any]:
    return {"data": [{"id": "qwen", "root": root, "max_model_len": 512}]}


async def test_an_embedding_model_is_known_by_its_routes() -> None:
    """`--runner pooling`: no generation routes (404), `/v1/embeddings` answers."""
    engine = AnsweringEngine(
        {
            ("GET", MODELS): _models(),
            ("POST", COMPLETIONS): refusal(404),
            ("POST", EMBEDDINGS): embedding_answer([0.5] * 7),
        }
    )
    model = await VllmTranslation("qwen").describe(engine)
    assert model == base.ModelDescription(
        capabilities=base.EMBEDDINGS,
        max_model_len=512,
        embedding_dimensions=7,
        identity="vllm:/models/qwen",
    )
    ((_, _, probe),) = [c for c in engine.calls if c[1] == EMBEDDINGS]
    assert VllmEmbeddingRequest.model_validate(probe).encoding_format == "base64"


async def test_a_generation_model_is_known_by_its_routes() -> None:
    """A generation runner: `/v1/completions` refuses an empty body (its validation), and
    `/v1/embeddings` is not registered (404)."""
    engine = AnsweringEngine({("GET", MODELS): _models(), ("POST", COMPLETIONS): refusal(400)})
    model = await VllmTranslation("qwen").describe(engine)
    assert model == base.ModelDescription(base.GENERATION, 512, 0, "vllm:/models/qwen")
    assert ("POST", COMPLETIONS, {}) in engine.calls


@pytest.mark.parametrize("path", [COMPLETIONS, EMBEDDINGS])
async def test_a_probe_that_fails_otherwise_keeps_the_adapter_from_serving(path: str) -> None:
    answers = {
        ("GET", MODELS): _models(),
        ("POST", COMPLETIONS): refusal(400),
        ("POST", EMBEDDINGS): refusal(404),
    }
    answers[("POST", path)] = refusal(401)
    with pytest.raises(base.EngineHTTPError, match="ADAPTER_ENGINE_API_KEY"):
        await VllmTranslation("qwen").describe(AnsweringEngine(answers))


async def test_no_root_is_no_identity() -> None:
    engine = AnsweringEngine(
        {
            ("GET", MODELS): {"data": [{"id": "qwen", "max_model_len": 8}]},
            ("POST", COMPLETIONS): refusal(400),
        }
    )
    assert (await VllmTranslation("qwen").describe(engine)).identity == ""


def _error(status: int, message: str, param: str | None = None) -> InferenceError:
    body = {
        "error": {"message": message, "type": "BadRequestError", "param": param, "code": status}
    }
    return T.error(status, orjson.dumps(body))


@pytest.mark.parametrize(
    ("message", "param", "reason", "reported_param"),
    [
        # PoolingParams._set_default_parameters
        (
            "Model 'qwen' does not support Matryoshka embeddings; dimensions must be unset "
            "(received dimensions=8).",
            None,
            pb.UNSUPPORTED_FEATURE,
            "dimensions",
        ),
        (
            "Model 'qwen' only supports dimensions in range [1, 384], got 999.",
            None,
            pb.INVALID_REQUEST,
            "dimensions",
        ),
        (
            "Model 'qwen' only supports Matryoshka dimensions [64, 128], got 100.",
            None,
            pb.INVALID_REQUEST,
            "dimensions",
        ),
        # renderers/params.py: _token_len_check
        (
            "This model's maximum context length is 512 tokens. However, your prompt contains "
            "600 input tokens, which exceeds this limit even without any output tokens. Please "
            "reduce the length of the input prompt.",
            "input_tokens",
            pb.CONTEXT_LENGTH_EXCEEDED,
            None,
        ),
        # renderers/base.py: validate_token_ids; v1/engine/input_processor.py
        ("Token id 99999999 is out of vocabulary", None, pb.INVALID_REQUEST, None),
        ("The decoder prompt cannot be empty", None, pb.INVALID_REQUEST, None),
    ],
    ids=["not-matryoshka", "out-of-range", "not-a-matryoshka-size", "too-long", "oov", "empty"],
)
def test_vllm_s_embedding_refusals(
    message: str, param: str | None, reason: int, reported_param: str | None
) -> None:
    error = _error(400, message, param)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.message == message
    if reported_param:
        assert error.metadata["param"] == reported_param


def test_base64_of_the_engine_is_read_as_little_endian() -> None:
    """The bytes are passed on as sent: vLLM was asked for little-endian."""
    raw = bytes(range(8))
    answer = {"data": [{"index": 0, "embedding": base64.b64encode(raw).decode()}], "usage": {}}
    result = T.embeddings(embed_request("qwen", "a"), answer)
    assert result.vectors == (raw,)
    assert result.prompt_tokens == 0
