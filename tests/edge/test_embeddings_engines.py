"""Embeddings end to end on the engines that serve them: the official `openai` SDK → edge →
adapter → the vLLM and SGLang simulators started as embedding models (as `make run`'s
demo-embed); and TGI, which serves none, refusing them clearly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import openai
import pytest

from tests.support.edge import Edge, KeySpec, start_edge
from tests.support.otlp import OtlpCollector
from tests.support.stacks import Stack, options, start_stack

#: The engines that serve embeddings; TGI is here as a chat model.
EMBEDDING_ENGINES = ("vllm", "sglang")
EMBED = options(embedding=True, matryoshka=True, embedding_dimensions=128)
TPM = 100_000
SERVER = 2  # OTLP SpanKind
KEYS = (KeySpec("full"), KeySpec("metered-vllm", tpm=TPM), KeySpec("metered-sglang", tpm=TPM))


@pytest.fixture(scope="module")
async def embedding_edge(
    tmp_path_factory: pytest.TempPathFactory, collector: OtlpCollector
) -> AsyncIterator[Edge]:
    log_dir = tmp_path_factory.mktemp("embedding-engines")
    stacks: dict[str, Stack] = {}
    try:
        for engine in (*EMBEDDING_ENGINES, "tgi"):
            opts = EMBED if engine in EMBEDDING_ENGINES else options()
            stacks[engine] = await asyncio.to_thread(start_stack, engine, log_dir, opts, "-embed")
        endpoints = {engine: [stack.address] for engine, stack in stacks.items()}
        edge = await asyncio.to_thread(
            start_edge,
            log_dir,
            endpoints,
            keys=KEYS,
            env={**collector.env, "EDGE_CACHE": "memory"},
            name="edge-embed",
        )
        try:
            yield edge
        finally:
            await asyncio.to_thread(edge.stop)
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in stacks.values()))


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    assert isinstance(body, dict)
    message = body["message"]
    assert isinstance(message, str)
    return message


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("engine", EMBEDDING_ENGINES)
async def test_the_sdk_embeds_batches_exactly_in_both_encodings(
    embedding_edge: Edge, engine: str
) -> None:
    client = embedding_edge.client()
    model = f"demo-{engine}"
    texts = [
        "the freight train leaves the yard at dawn",
        "a freight train leaves the yard",
        "purple elephants enjoy quantum chess",
    ]
    as_base64 = await client.embeddings.create(model=model, input=texts)  # the SDK's default
    as_floats = await client.embeddings.create(model=model, input=texts, encoding_format="float")
    vectors = [d.embedding for d in as_base64.data]
    assert [d.embedding for d in as_floats.data] == vectors
    assert [d.index for d in as_base64.data] == [0, 1, 2]
    assert {len(v) for v in vectors} == {128}
    assert as_base64.model == model
    assert as_base64.usage.prompt_tokens == as_base64.usage.total_tokens > 0
    again = await client.embeddings.create(model=model, input=texts[0])
    assert again.data[0].embedding == vectors[0]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])


@pytest.mark.parametrize("engine", EMBEDDING_ENGINES)
async def test_dimensions_shorten_the_vectors(embedding_edge: Edge, engine: str) -> None:
    client = embedding_edge.client()
    short = await client.embeddings.create(model=f"demo-{engine}", input="points", dimensions=32)
    assert len(short.data[0].embedding) == 32
    assert np.isclose(np.linalg.norm(short.data[0].embedding), 1.0, rtol=1e-5)


@pytest.mark.parametrize("engine", EMBEDDING_ENGINES)
async def test_an_embedding_model_refuses_chat_and_what_the_engine_cannot_embed(
    embedding_edge: Edge, engine: str
) -> None:
    client = embedding_edge.client()
    model = f"demo-{engine}"
    with pytest.raises(openai.BadRequestError) as no_chat:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    assert _message(no_chat.value) == f"model '{model}' does not support chat completions"
    for bad in ([[1, 2**31]], ["fine", ""]):  # out of the vocabulary; empty (both refuse)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model=model, input=bad)
        assert refused.value.param == "input"


async def test_tgi_refuses_embeddings_clearly(embedding_edge: Edge) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await embedding_edge.client().embeddings.create(model="demo-tgi", input="hello")
    assert _message(refused.value) == "model 'demo-tgi' does not support embeddings"
    assert refused.value.code == "model_not_supported"


@pytest.mark.parametrize("engine", EMBEDDING_ENGINES)
async def test_a_repeat_is_answered_from_the_cache(embedding_edge: Edge, engine: str) -> None:
    # The adapters report the weights they serve, so the edge may cache their answers.
    create = embedding_edge.client().embeddings.with_raw_response.create
    text = f"cache me {uuid.uuid4().hex}"
    first = await create(model=f"demo-{engine}", input=text)
    again = await create(model=f"demo-{engine}", input=text, encoding_format="float")
    assert (first.headers["x-switchyard-cache"], again.headers["x-switchyard-cache"]) == (
        "miss",
        "hit",
    )
    assert again.parse().data[0].embedding == first.parse().data[0].embedding
    assert again.parse().usage.prompt_tokens == first.parse().usage.prompt_tokens


@pytest.mark.parametrize("engine", EMBEDDING_ENGINES)
async def test_the_engine_count_is_charged_and_refusals_charge_nothing(
    embedding_edge: Edge, engine: str
) -> None:
    key, model = f"metered-{engine}", f"demo-{engine}"
    client = embedding_edge.client(key)
    for bad in ([[1, 2**31]], ["fine", ""]):
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model=model, input=bad)
    ids, request_id = [11, 12, 13], uuid.uuid4().hex
    response = await client.embeddings.with_raw_response.create(
        model=model, input=ids, extra_headers={"x-request-id": request_id}
    )
    # Nothing was kept of the refusals (refills never pass the limit: no timing involved).
    assert response.headers["x-ratelimit-remaining-tokens"] == str(TPM - len(ids))
    record = await embedding_edge.record(request_id)
    assert record["prompt_tokens"] == response.parse().usage.prompt_tokens == len(ids)


async def test_the_edge_span_is_an_embeddings_operation(
    embedding_edge: Edge, collector: OtlpCollector
) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-b7ad6b7169203331-01"
    await embedding_edge.client().embeddings.create(
        model="demo-vllm", input=["a", "b"], extra_headers={"traceparent": traceparent}
    )
    spans = await collector.wait_for(trace_id, {"edge"})
    (server,) = [s for s in spans if s.service == "edge" and s.kind == SERVER]
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    assert server.attributes["gen_ai.request.model"] == "demo-vllm"
    assert server.attributes["gen_ai.usage.input_tokens"] > 0
    assert "gen_ai.usage.output_tokens" not in server.attributes
