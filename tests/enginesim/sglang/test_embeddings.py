"""An SGLang simulator started with --is-embedding: `/v1/embeddings` and `/encode` in SGLang's
shapes, its refusals, and generation routes as SGLang answers them on an embedding model."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import numpy as np
import openai
import pytest

from switchyard.enginesim import embedding, tokenizer
from switchyard.enginesim.sglang.flags import parse
from tests.enginesim.sglang.conftest import BASE, asgi, engine_of, live, make_app
from tests.enginesim.sglang.shapes import embedding_request, embedding_response
from tests.support.polling import eventually

MODEL_PATH = "org/sim-model"  # BASE's --model-path: SGLang names it in answers and errors
EMBED = ("--is-embedding", "--sim-embedding-dimensions", "256")
MATRYOSHKA = (*EMBED, "--json-model-override-args", '{"matryoshka_dimensions": [64, 128]}')
LONG = "word " * 1100  # over BASE's context of 1024 tokens


def vector_of(text: str, dimensions: int = 256) -> np.ndarray[Any, np.dtype[np.float32]]:
    return embedding.embed(MODEL_PATH, tokenizer.encode(text), dimensions)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi(make_app(*MATRYOSHKA, "--enable-metrics")) as c:
        yield c


async def embed(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "demo")
    embedding_request(body)
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    embedding_response(answer)
    return answer


async def refusal(
    client: httpx.AsyncClient, body: dict[str, Any], path: str = "/v1/embeddings"
) -> Any:
    response = await client.post(path, json={"model": "demo", **body})
    assert response.status_code == 400, response.text
    return response.json()


def bad_request(message: str) -> dict[str, Any]:
    """SGLang's flat `ErrorResponse` of a refused embedding request."""
    return {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


# --- flags --------------------------------------------------------------------------------
def test_embedding_flags_parse_into_the_model_config() -> None:
    config = parse([*BASE, *MATRYOSHKA])
    assert (config.is_embedding, config.is_generation, config.hidden_size) == (True, False, 256)
    assert (config.is_matryoshka, config.matryoshka_dimensions) == (True, [64, 128])
    plain = parse([*BASE])
    assert (plain.is_generation, plain.is_matryoshka, plain.hidden_size) == (True, False, 384)
    flagged = parse([*BASE, "--json-model-override-args", '{"is_matryoshka": true}'])
    assert (flagged.is_matryoshka, flagged.matryoshka_dimensions) == (True, None)


@pytest.mark.parametrize("value", ["{not json", "[1, 2]", '{"matryoshka_dimensions": [0]}'])
def test_a_bad_override_is_refused_at_start(value: str) -> None:
    with pytest.raises(SystemExit):
        parse([*BASE, "--json-model-override-args", value])


# --- vectors and shapes ---------------------------------------------------------------------
async def test_one_text_is_the_unit_vector_of_its_tokens(client: httpx.AsyncClient) -> None:
    answer = await embed(client, input="the quick brown fox")
    (item,) = answer["data"]
    vector = np.array(item["embedding"], dtype=np.float32)
    assert np.array_equal(vector, vector_of("the quick brown fox"))  # exact float32 values
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    tokens = len(tokenizer.encode("the quick brown fox"))
    assert answer["model"] == MODEL_PATH  # SGLang answers with its --model-path
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] == tokens
    assert answer["usage"]["completion_tokens"] == 0


async def test_every_input_form_is_a_batch_in_order(client: httpx.AsyncClient) -> None:
    texts = ["red apples", "green pears and apples", "a fast car"]
    ids = [tokenizer.encode(t) for t in texts]
    expected = [vector_of(t) for t in texts]
    for value in (texts, ids):
        answer = await embed(client, input=value)
        assert [d["index"] for d in answer["data"]] == [0, 1, 2]
        got = [np.array(d["embedding"], dtype=np.float32) for d in answer["data"]]
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
        assert answer["usage"]["prompt_tokens"] == sum(len(i) for i in ids)
    single = await embed(client, input=ids[0])  # a flat list of ids is one input
    assert len(single["data"]) == 1
    assert np.array_equal(np.array(single["data"][0]["embedding"], dtype=np.float32), expected[0])


async def test_base64_is_the_little_endian_float32_bytes(client: httpx.AsyncClient) -> None:
    floats = await embed(client, input=["hello world", "goodbye"])
    packed = await embed(client, input=["hello world", "goodbye"], encoding_format="base64")
    for f, b in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.array(f["embedding"], dtype=np.float32))


async def test_the_openai_sdk_reads_both_formats_and_related_texts_are_closer() -> None:
    # The SDK's own HTTP client library, on the app in process.
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=make_app(*EMBED))) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://sglang/v1", api_key="-", http_client=http, max_retries=0
        )
        texts = ["the cat sat on the mat", "a cat sat on a mat", "stock markets fell sharply"]
        packed = await sdk.embeddings.create(model="demo", input=texts)  # base64 by default
        floats = await sdk.embeddings.create(model="demo", input=texts, encoding_format="float")
        again = await sdk.embeddings.create(model="demo", input=texts[0])
    vectors = [np.array(d.embedding, dtype=np.float32) for d in packed.data]
    assert all(
        np.array_equal(v, np.array(f.embedding, dtype=np.float32))
        for v, f in zip(vectors, floats.data, strict=True)
    )
    assert np.array_equal(vectors[0], np.array(again.data[0].embedding, dtype=np.float32))
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    assert packed.usage.prompt_tokens == sum(len(tokenizer.encode(t)) for t in texts)


async def test_matryoshka_dimensions_shorten_and_renormalize(client: httpx.AsyncClient) -> None:
    answer = await embed(client, input="hello world", dimensions=64)
    vector = np.array(answer["data"][0]["embedding"], dtype=np.float32)
    assert np.array_equal(vector, embedding.shortened(vector_of("hello world"), 64))
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


# --- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "Input cannot be empty"),
        ({"input": ""}, "Input cannot be empty"),
        ({"input": "  \n"}, "Input cannot be empty or whitespace only"),
        ({"input": ["ok", " "]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": [5, -1]}, "Token ID at index 1 must be non-negative"),
        (
            {"input": "hi", "encoding_format": "bfloat16"},
            "encoding_format must be either 'float' or 'base64', got 'bfloat16'",
        ),
        (
            {
                "input": [[5], [tokenizer.VOCAB_SIZE]]
            },  # the simulator's own check: see embeddings.py
            f"token id {tokenizer.VOCAB_SIZE} is out of range [0, {tokenizer.VOCAB_SIZE})",
        ),
        (
            {"input": ["short", LONG]},
            f"The input ({len(tokenizer.encode(LONG))} tokens) is longer than the model's "
            "context length (1024 tokens).",
        ),
        (
            {"input": "hi", "dimensions": 100},
            f"Model '{MODEL_PATH}' only supports [64, 128] matryoshka dimensions, "
            "using other output dimensions will lead to poor results.",
        ),
        ({"input": "hi", "dimensions": 0}, "Requested dimensions must be greater than 0"),
    ],
)
async def test_bad_input_gets_sglangs_400_and_runs_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    assert await refusal(client, body) == bad_request(message)
    metrics = (await client.get("/metrics")).text
    assert (
        'sglang:num_requests_total{engine_type="unified",is_streaming="false",model_name="demo"} 0.0'
        in metrics
    )


@pytest.mark.parametrize(
    ("flags", "dimensions", "message"),
    [
        (
            EMBED, 64,
            f"Model '{MODEL_PATH}' does not support matryoshka representation, "
            "changing output dimensions will lead to poor results.",
        ),
        (
            (*EMBED, "--json-model-override-args", '{"is_matryoshka": true}'), 300,
            "Provided dimensions are greater than max embedding dimension: 256",
        ),
    ],
)  # fmt: skip
async def test_dimensions_the_model_cannot_give_are_refused(
    flags: tuple[str, ...], dimensions: int, message: str
) -> None:
    async with asgi(make_app(*flags)) as c:
        assert await refusal(c, {"input": "hi", "dimensions": dimensions}) == bad_request(message)


async def test_auto_truncate_embeds_the_longest_prompt_the_scheduler_takes() -> None:
    async with asgi(make_app(*EMBED, "--allow-auto-truncate")) as c:
        answer = await embed(c, input=LONG)
    assert answer["usage"]["prompt_tokens"] == 1024 - 1 - 5  # max_req_input_len


async def test_a_batch_needs_a_list_of_rids() -> None:
    async with asgi(make_app(*EMBED)) as c:
        response = await c.post("/v1/embeddings", json={"input": ["a", "b"], "rid": "one"})
        assert response.status_code == 500
        assert response.json()["message"] == "Internal server error: The rid should be a list."
        ok = await embed(c, input=["a", "b"], rid=["r-1", "r-2"])
        assert len(ok["data"]) == 2


# --- a generation model, and generation on an embedding model --------------------------------
async def test_a_generation_model_refuses_embeddings_and_says_it_generates() -> None:
    async with asgi(make_app()) as c:
        body = await refusal(c, {"input": "hi"})
        info = (await c.get("/model_info")).json()
    assert body == bad_request(
        "This model does not appear to be an embedding model by default. "
        "Please add `--is-embedding` when launching the server or try another model."
    )
    assert info["is_generation"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/completions", {"prompt": "hi", "stream": True}),
    ],
    ids=["chat", "completions", "stream"],
)
async def test_openai_generation_on_an_embedding_model_is_sglangs_500(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json={"model": "demo", **body})
    assert response.status_code == 500
    assert response.json() == {
        "object": "error", "message": "Internal server error: 'text'",
        "type": "InternalServerError", "param": None, "code": 500,
    }  # fmt: skip
    assert (await client.get("/model_info")).json()["is_generation"] is False


async def test_native_generation_on_an_embedding_model_fails_after_sglangs_checks(
    client: httpx.AsyncClient,
) -> None:
    failed = await client.post("/generate", json={"text": "hi"})
    assert (failed.status_code, failed.text) == (500, "Internal Server Error")
    refused = await client.post("/generate", json={"text": LONG})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith(
        f"The input ({len(tokenizer.encode(LONG))} tokens) is longer than"
    )
    info = (await client.get("/server_info")).json()
    assert info["is_embedding"] is True


# --- /encode ---------------------------------------------------------------------------------
async def test_encode_answers_an_embedding_and_meta_info_per_input(
    client: httpx.AsyncClient,
) -> None:
    one = (await client.post("/encode", json={"text": "hello world", "rid": "e-1"})).json()
    assert np.array_equal(np.array(one["embedding"], dtype=np.float32), vector_of("hello world"))
    meta = one["meta_info"]
    assert meta["id"] == "e-1"
    assert meta["finish_reason"] == {"type": "length", "length": 0}
    assert meta["prompt_tokens"] == len(tokenizer.encode("hello world"))
    ids = [tokenizer.encode("a b"), tokenizer.encode("c")]
    batch = (await client.post("/encode", json={"input_ids": ids, "dimensions": 128})).json()
    assert [len(item["embedding"]) for item in batch] == [128, 128]
    assert [item["meta_info"]["prompt_tokens"] for item in batch] == [len(i) for i in ids]
    refused = await client.post("/encode", json={"text": "hi", "input_ids": [1]})
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {"message": "text and input_ids cannot be provided at the same time"}
    }


# --- a batch in the engine ---------------------------------------------------------------------
async def test_a_batch_counts_one_request_per_input(client: httpx.AsyncClient) -> None:
    texts = ["one two", "three", "four five six"]
    await embed(client, input=texts)
    metrics = (await client.get("/metrics")).text
    labels = 'engine_type="unified",is_streaming="false",model_name="demo"'
    tokens = sum(len(tokenizer.encode(t)) for t in texts)
    assert f"sglang:num_requests_total{{{labels}}} 3.0" in metrics
    assert f"sglang:prompt_tokens_total{{{labels}}} {float(tokens)}" in metrics
    assert f"sglang:generation_tokens_total{{{labels}}} 0.0" in metrics


async def test_a_batch_runs_at_once_and_a_client_gone_aborts_every_input() -> None:
    # A first token that never comes in time: the inputs stay in the engine until aborted.
    app = make_app(*EMBED, "--sim-ttft", "600", "--sim-itl", "0", "--enable-metrics")
    engine = engine_of(app)
    async with live(app) as url, httpx.AsyncClient(base_url=url) as http:
        call = asyncio.create_task(http.post("/v1/embeddings", json={"input": ["a", "b", "c"]}))
        await eventually(lambda: engine.running == 3, what="all three inputs prefilling together")
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        await eventually(lambda: len(engine.aborts) == 3, what="every input aborted")
        metrics = (await http.get("/metrics")).text
    assert (engine.running, engine.stats.in_flight, engine.stats.aborted) == (0, 0, 3)
    assert (
        'sglang:num_aborted_requests_total{engine_type="unified",model_name="demo"} 3.0' in metrics
    )
