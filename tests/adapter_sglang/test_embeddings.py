"""The SGLang translation's embeddings: bodies SGLang 0.5.23's own `EmbeddingRequest` (from
its release wheel) accepts, one rid per input, the vectors it answers, what the model serves
(`/model_info`), and its refusals.

Beyond the pydantic model, `serving_embedding.py` takes only `encoding_format` "float" or
"base64", and `EmbeddingReqInput.normalize_batch_and_arguments` wants a list of rids (one
per input, all different) for a list input: checked here as well.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from switchyard.adapter import translation as base
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.embeddings import (
    AnsweringEngine,
    embed_request,
    embedding_answer,
    float32_le,
)
from tests.support.engine_http import RecordingEngine
from tests.support.engine_wheels import sglang_models
from tests.support.request_matrix import EmbedCase, embed_matrix, on_the_wire

T = SglangTranslation("qwen")


@pytest.mark.parametrize("case", embed_matrix(), ids=str)
def test_sglang_takes_every_embedding_body_the_adapter_sends(case: EmbedCase) -> None:
    call = T.embed_request(case.request)
    assert call.path == "/v1/embeddings"
    body = on_the_wire(call.body)
    model = sglang_models().protocol.EmbeddingRequest.model_validate(body)
    assert model.encoding_format == "base64"  # packed "<f" by SGLang: exact float32 LE
    assert model.model == "qwen"
    expected = [
        i.text if i.WhichOneof("kind") == "text" else list(i.tokens.ids)
        for i in case.request.inputs
    ]
    assert model.input == expected  # one call, always a list
    assert model.dimensions == (
        case.request.dimensions if case.request.HasField("dimensions") else None
    )
    # One rid per input, unique, each the caller's id plus this call's own suffix; each is
    # what an abort names.
    assert isinstance(model.rid, list)
    assert len(model.rid) == len(set(model.rid)) == len(case.request.inputs)
    assert all(rid.startswith("r-1-") for rid in model.rid)
    assert call.aborts == tuple(model.rid)


def test_two_calls_with_one_request_id_never_share_a_rid() -> None:
    request = embed_request("qwen", "a", request_id="r-1")
    first, second = T.embed_request(request), T.embed_request(request)
    assert not set(first.aborts) & set(second.aborts)


def test_the_model_refuses_what_sglang_refuses() -> None:
    """The check can fail: an input of the wrong type."""
    with pytest.raises(ValueError, match="input"):
        sglang_models().protocol.EmbeddingRequest.model_validate({"input": {"text": "a"}})


def test_vectors_are_the_engine_s_exact_float32_bytes() -> None:
    vectors = ([0.1, 0.2, -0.3], [3.0, 1e-40, -0.0])
    answer = embedding_answer(*vectors, prompt_tokens=4)
    result = T.embeddings(embed_request("qwen", "a", "b"), answer)
    assert result.vectors == tuple(float32_le(v) for v in vectors)
    assert result.prompt_tokens == 4


def _info(is_generation: bool, **more: Any) -> dict[str, Any]:
    return {
        "model_path": "/models/bge",
        "is_generation": is_generation,
        "tool_call_parser": None,
        **more,
    }


def _models(context: int = 512) -> dict[str, Any]:
    return {"data": [{"id": "qwen", "max_model_len": context}]}


async def test_an_embedding_model_is_known_by_is_generation() -> None:
    engine = AnsweringEngine(
        {
            ("GET", "/model_info"): _info(False, weight_version="default"),
            ("GET", "/v1/models"): _models(512),
            ("POST", "/v1/embeddings"): embedding_answer([0.5] * 5),
        }
    )
    model = await SglangTranslation("qwen").describe(engine)
    assert model == base.ModelDescription(
        capabilities=base.EMBEDDINGS,
        max_model_len=511,  # SGLang refuses an input of the whole context
        embedding_dimensions=5,
        identity="sglang:/models/bge@default",
    )
    ((_, _, probe),) = [c for c in engine.calls if c[1] == "/v1/embeddings"]
    sglang_models().protocol.EmbeddingRequest.model_validate(probe)


async def test_a_generation_model_makes_no_embedding_probe() -> None:
    engine = RecordingEngine(
        {("GET", "/model_info"): _info(True), ("GET", "/v1/models"): _models(4096)}
    )
    model = await SglangTranslation("qwen").describe(engine)
    assert model == base.ModelDescription(base.GENERATION, 4096, 0, "sglang:/models/bge")
    assert [path for _, path, _ in engine.calls] == ["/model_info", "/v1/models"]


def _error(message: str, status: int = 400) -> InferenceError:
    body = {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": status,
    }
    return T.error(status, orjson.dumps(body))


@pytest.mark.parametrize(
    ("message", "reason", "param"),
    [
        # tokenizer_manager._validate_for_matryoshka_dim
        (
            "Model '/models/bge' does not support matryoshka representation, changing output "
            "dimensions will lead to poor results.",
            pb.UNSUPPORTED_FEATURE,
            "dimensions",
        ),
        (
            "Model '/models/bge' only supports [64, 128] matryoshka dimensions, using other "
            "output dimensions will lead to poor results.",
            pb.INVALID_REQUEST,
            "dimensions",
        ),
        (
            "Provided dimensions are greater than max embedding dimension: 384",
            pb.INVALID_REQUEST,
            "dimensions",
        ),
        # tokenizer_manager._validate_one_request
        (
            "The input (600 tokens) is longer than the model's context length (512 tokens).",
            pb.CONTEXT_LENGTH_EXCEEDED,
            None,
        ),
        (
            "This model does not appear to be an embedding model by default. Please add "
            "`--is-embedding` when launching the server or try another model.",
            pb.UNSUPPORTED_FEATURE,
            None,
        ),
        # serving_embedding._validate_request
        ("Input at index 1 cannot be empty or whitespace only", pb.INVALID_REQUEST, None),
    ],
    ids=["not-matryoshka", "not-a-matryoshka-size", "too-many", "too-long", "generation", "empty"],
)
def test_sglang_s_embedding_refusals(message: str, reason: int, param: str | None) -> None:
    error = _error(message)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.message == message
    if param:
        assert error.metadata["param"] == param
