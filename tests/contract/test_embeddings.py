"""Embed through each adapter to its simulated engine started as an embedding model (vLLM's
pooling runner, SGLang's `--is-embedding`), and Embed refused by generation models (every
engine, TGI included) before any engine call.

What the adapter adds is checked against the engine's own answers: the vectors are the
float32 values the engine computed (asked again here, as floats, straight from the engine),
a batch is one engine call, and the engine's refusals keep their meaning.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from switchyard.enginesim import tokenizer
from switchyard.inference.errors import InferenceError, from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.contract.conftest import sim_stats
from tests.support.canonical import generate_request
from tests.support.embeddings import embed_request, float32_le, floats
from tests.support.polling import eventually
from tests.support.stacks import TEST_OPTIONS, Stack, running_stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub

#: The engines that serve embeddings.
EMBEDDING_ENGINES = ("vllm", "sglang")
DIMENSIONS = 64
#: The Matryoshka sizes the model takes.
SIZES = (16, 32)
CONTEXT = 256
EMBEDDING = replace(
    TEST_OPTIONS,
    embedding=True,
    matryoshka=True,
    matryoshka_dimensions=SIZES,
    embedding_dimensions=DIMENSIONS,
    max_model_len=CONTEXT,
)


@pytest.fixture(scope="module", params=EMBEDDING_ENGINES)
def embedding_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    log_dir = tmp_path_factory.mktemp(f"contract-embed-{engine}")
    with running_stack(engine, log_dir, EMBEDDING, "-embed") as s:
        yield s


@pytest.fixture
async def embed_stub(embedding_stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(embedding_stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


async def _refusal(call: Any) -> InferenceError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


async def _engine_floats(stack: Stack, texts: list[str]) -> list[list[float]]:
    """The engine's own vectors for `texts`, as the JSON floats it answers."""
    body = {"model": stack.model, "input": texts, "encoding_format": "float"}
    async with httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as client:
        response = await client.post("/v1/embeddings", json=body)
    response.raise_for_status()
    data = sorted(response.json()["data"], key=lambda item: item["index"])
    return [item["embedding"] for item in data]


def _calls(engine: str, records: list[dict[str, Any]]) -> int:
    """How many HTTP calls made the engine requests `records`: vLLM counts one request per
    call (`embd-<request_id>`); SGLang one per input, each with the rid the adapter gave it
    (`<call's rid>-<input>`), so a call is a rid prefix."""
    ids = [record["request_id"] for record in records]
    if engine == "vllm":
        return len(ids)
    return len({rid.rpartition("-")[0] for rid in ids})


def _cosine(a: bytes, b: bytes) -> float:
    x, y = floats(a), floats(b)
    return sum(p * q for p, q in zip(x, y, strict=True)) / math.sqrt(
        sum(p * p for p in x) * sum(q * q for q in y)
    )


async def test_list_models_describes_an_embedding_model(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    (info,) = (await embed_stub.ListModels(pb.ListModelsRequest())).models
    assert list(info.capabilities) == [pb.CAPABILITY_EMBEDDINGS]
    assert info.embedding_dimensions == DIMENSIONS
    assert info.identity.startswith(f"{embedding_stack.engine}:")
    assert len(info.identity) > len(embedding_stack.engine) + 1
    # The most tokens one input may have (SGLang refuses a whole context's worth).
    assert info.max_model_len == (CONTEXT if embedding_stack.engine == "vllm" else CONTEXT - 1)


async def test_a_batch_is_one_engine_call_of_the_engine_s_exact_vectors(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    texts = [f"passage number {i} about the freight yard" for i in range(32)]
    before = (await sim_stats(embedding_stack))["requests"]
    request = embed_request(embedding_stack.model, *texts, request_id="batch-1")
    response = await embed_stub.Embed(request)
    stats = await sim_stats(embedding_stack)
    assert _calls(embedding_stack.engine, stats["recent"][before - stats["requests"] :]) == 1
    expected = await _engine_floats(embedding_stack, texts)
    assert [e.float32_le for e in response.embeddings] == [float32_le(v) for v in expected]
    assert all(len(e.float32_le) == DIMENSIONS * 4 for e in response.embeddings)
    assert response.prompt_tokens >= len(texts)


async def test_same_input_same_vector_and_related_texts_closer(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly tax filing deadline"]
    first = await embed_stub.Embed(embed_request(embedding_stack.model, *texts))
    again = await embed_stub.Embed(embed_request(embedding_stack.model, texts[0]))
    cat, kitten, tax = (e.float32_le for e in first.embeddings)
    assert again.embeddings[0].float32_le == cat
    assert _cosine(cat, kitten) > _cosine(cat, tax)


async def test_token_id_inputs_count_their_tokens(embedding_stack: Stack, embed_stub: Stub) -> None:
    ids = [tokenizer.token_id(t) for t in tokenizer.tokens("rail yard switch")]
    request = embed_request(embedding_stack.model, ids, ids[:1])
    response = await embed_stub.Embed(request)
    assert len(response.embeddings) == 2
    assert response.prompt_tokens == len(ids) + 1


async def test_dimensions_shorten_the_vectors_to_a_size_the_model_takes(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    model = embedding_stack.model
    response = await embed_stub.Embed(embed_request(model, "short vector", dimensions=SIZES[0]))
    vector = floats(response.embeddings[0].float32_le)
    assert len(vector) == SIZES[0]
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    error = await _refusal(embed_stub.Embed(embed_request(model, "x", dimensions=SIZES[0] + 1)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
    assert error.metadata.get("param") == "dimensions"


async def test_an_input_longer_than_the_model_takes_is_context_length_exceeded(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    model = embedding_stack.model
    word = tokenizer.token_id(tokenizer.tokens("yard")[0])
    for request in (
        embed_request(model, [word] * (CONTEXT + 10)),
        embed_request(model, "word " * (CONTEXT * 2)),
    ):
        error = await _refusal(embed_stub.Embed(request))
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
        )


async def test_what_each_engine_refuses_of_an_input_is_invalid_request(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    """vLLM checks token ids against its vocabulary (an empty text it embeds or refuses as
    the model's tokenizer makes it tokens or none); SGLang refuses empty or blank texts (and
    does not check the token ids of embedding inputs against its vocabulary)."""
    model = embedding_stack.model
    if embedding_stack.engine == "vllm":
        request = embed_request(model, [tokenizer.VOCAB_SIZE + 5])
    else:
        request = embed_request(model, "fine", "  ")
    error = await _refusal(embed_stub.Embed(request))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)


async def test_generation_on_an_embedding_model_never_reaches_the_engine(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    model = embedding_stack.model
    before = (await sim_stats(embedding_stack))["requests"]
    for request, what in (
        (generate_request(model, messages=[("user", "Hi")], max_tokens=4), "chat completions"),
        (generate_request(model, prompt="Once", max_tokens=4), "completions"),
    ):
        error = await _refusal(embed_stub.Generate(request))
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.UNSUPPORTED_FEATURE,
        )
        assert error.message == f"model '{model}' does not support {what}"
    assert (await sim_stats(embedding_stack))["requests"] == before


async def test_an_abandoned_embed_is_aborted_in_the_engine(
    embedding_stack: Stack, embed_stub: Stub
) -> None:
    async def idle() -> bool:
        return bool((await sim_stats(embedding_stack))["in_flight"] == 0)

    await eventually(idle, what="the engine idle")
    before = (await sim_stats(embedding_stack))["aborted"]
    async with embedding_stack.stalled(count=1, after=0):  # before its one output
        call = embed_stub.Embed(embed_request(embedding_stack.model, "held", "too"))

        async def running() -> bool:
            return bool((await sim_stats(embedding_stack))["in_flight"] >= 1)

        await eventually(running, what="the request at the engine")
        call.cancel()

        async def aborted() -> bool:
            return bool((await sim_stats(embedding_stack))["aborted"] > before)

        await eventually(aborted, what="the engine aborted it")
    await eventually(idle, what="the engine idle")


async def test_embed_on_a_generation_model_never_reaches_the_engine(
    stack: Stack, stub: Stub
) -> None:
    (info,) = (await stub.ListModels(pb.ListModelsRequest())).models
    assert sorted(info.capabilities) == [pb.CAPABILITY_CHAT, pb.CAPABILITY_COMPLETIONS]
    assert info.embedding_dimensions == 0
    assert info.identity.startswith(f"{stack.engine}:")
    before = (await sim_stats(stack))["requests"]
    error = await _refusal(stub.Embed(embed_request(stack.model, "a", "b")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert error.message == f"model '{stack.model}' does not support embeddings"
    assert (await sim_stats(stack))["requests"] == before
