"""`/v1/embeddings` on a pooling model (`--runner pooling`), as vLLM 0.33 serves it.

Shapes are vLLM's `EmbeddingResponse` / `EmbeddingResponseData` / `UsageInfo`
(`entrypoints/pooling/embed/protocol.py`, `serve/engine/protocol.py`), errors its renderer's
and `PoolingParams`' (see `switchyard.enginesim.vllm.embeddings`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import httpx
import numpy as np
import pytest

from switchyard.enginesim import embedding, tokenizer
from switchyard.enginesim.vllm.embeddings import binary
from tests.enginesim.vllm.conftest import FAST, MODEL, Factory, SdkFactory, argv
from tests.enginesim.vllm.test_routes import sample
from tests.support.polling import eventually

POOLING = ("--runner", "pooling", "--sim-embedding-dimensions", "32", *FAST)
MATRYOSHKA = (*POOLING, "--hf-overrides", '{"matryoshka_dimensions": [8, 16, 32]}')
WEIGHTS = "org/sim-model"  # what conftest serves: the vectors' seed


def floats(item: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(item["embedding"], dtype=np.float32)


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    return error


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": MODEL, **body})


async def test_the_response_is_vllms_shape(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    response = await embed(client, input=["the cat sat", "a dog"], user="u-1")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "data", "usage"]
    assert body["id"].startswith("embd-")
    assert len(body["id"]) == len("embd-") + 16
    assert (body["object"], body["model"]) == ("list", MODEL)
    assert isinstance(body["created"], int)
    assert [list(d) for d in body["data"]] == [["index", "object", "embedding"]] * 2
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "embedding"), (1, "embedding")]
    tokens = tokenizer.count("the cat sat") + tokenizer.count("a dog")
    assert body["usage"] == {
        "prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
        "prompt_tokens_details": None, "completion_tokens_details": None,
    }  # fmt: skip
    for item, text in zip(body["data"], ["the cat sat", "a dog"], strict=True):
        expected = embedding.embed(WEIGHTS, tokenizer.encode(text), 32)
        assert floats(item).tobytes() == expected.tobytes()  # exact float32 values


async def test_the_sdk_gets_the_same_floats_as_base64_and_as_float(sdk: SdkFactory) -> None:
    oai = await sdk(*POOLING)
    texts = ["how to bake sourdough bread", "bake bread with sourdough", "stock markets fell"]
    as_base64 = await oai.embeddings.create(model=MODEL, input=texts)  # the SDK's default
    as_float = await oai.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in as_base64.data] == [0, 1, 2]
    for b, f in zip(as_base64.data, as_float.data, strict=True):
        assert (
            np.asarray(b.embedding, np.float32).tobytes()
            == np.asarray(f.embedding, np.float32).tobytes()
        )
        assert len(b.embedding) == 32
    assert as_base64.usage.prompt_tokens == sum(tokenizer.count(t) for t in texts)
    query, related, unrelated = (np.asarray(d.embedding) for d in as_float.data)
    assert query @ related > query @ unrelated


async def test_text_and_its_token_ids_give_the_same_vector(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    ids = (await client.post("/tokenize", json={"prompt": "Hello there, world"})).json()["tokens"]
    by_text = (await embed(client, input="Hello there, world")).json()
    by_ids = (await embed(client, input=ids)).json()
    by_id_lists = (await embed(client, input=[ids, ids[:1]])).json()
    assert by_text["data"][0]["embedding"] == by_ids["data"][0]["embedding"]
    assert by_id_lists["data"][0]["embedding"] == by_ids["data"][0]["embedding"]
    assert by_ids["usage"]["prompt_tokens"] == len(ids)
    assert by_id_lists["usage"]["prompt_tokens"] == len(ids) + 1


@pytest.mark.parametrize(
    ("dtype", "endianness", "numpy_type"),
    [
        ("float32", "little", "<f4"),
        ("float32", "big", ">f4"),
        ("float32", "native", f"{'<' if sys.byteorder == 'little' else '>'}f4"),
        ("float16", "little", "<f2"),
        ("float16", "big", ">f2"),
    ],
)
async def test_base64_in_each_numpy_dtype_and_byte_order(
    simulator: Factory, dtype: str, endianness: str, numpy_type: str
) -> None:
    client, _ = await simulator(*POOLING)
    exact = floats((await embed(client, input="some words")).json()["data"][0])
    body = {"encoding_format": "base64", "embed_dtype": dtype, "endianness": endianness}
    encoded = (await embed(client, input="some words", **body)).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype=numpy_type)
    assert decoded.tobytes() == exact.astype(numpy_type).tobytes()


def test_bfloat16_and_fp8_round_to_nearest_even_as_torch_does() -> None:
    values = np.array([1.0, -0.5, 0.3, 1.0625, 1.9999, 2.0**-9, 0.0], dtype=np.float32)
    # fp8 e4m3: bias 7, 3 mantissa bits (0x38 = 1.0; 1.0625 is a tie, kept even;
    # 1.9999 carries into the exponent; 2^-9 is the smallest subnormal).
    assert binary(values, "fp8_e4m3", "big") == bytes([0x38, 0xB0, 0x2A, 0x38, 0x40, 0x01, 0])
    # fp8 e5m2: bias 15, 2 mantissa bits.
    assert binary(values[:3], "fp8_e5m2", "little") == bytes([0x3C, 0xB8, 0x35])
    # bfloat16: the top 16 bits of float32, rounded (0.3 = 0x3E99999A rounds up to 0x3E9A).
    assert binary(values[:3], "bfloat16", "big") == bytes.fromhex("3f80bf003e9a")
    assert binary(values[:1], "bfloat16", "little") == bytes.fromhex("803f")


async def test_bytes_formats_carry_metadata_in_a_header(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    texts = ["one two", "three"]
    exact = [floats(d) for d in (await embed(client, input=texts)).json()["data"]]
    response = await embed(client, input=texts, encoding_format="bytes", endianness="little")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"".join(v.astype("<f4").tobytes() for v in exact)
    metadata = json.loads(response.headers["metadata"])
    assert metadata["id"].startswith("embd-")
    assert metadata["model"] == MODEL
    assert metadata["data"] == [
        {"index": 0, "embed_dtype": "float32", "endianness": "little", "start": 0, "end": 128,
         "shape": [32]},
        {"index": 1, "embed_dtype": "float32", "endianness": "little", "start": 128, "end": 256,
         "shape": [32]},
    ]  # fmt: skip
    tokens = sum(tokenizer.count(t) for t in texts)
    assert metadata["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    only = await embed(client, input=texts, encoding_format="bytes_only", endianness="little")
    assert (only.content, only.headers.get("metadata")) == (response.content, None)


async def test_matryoshka_dimensions_shorten_and_renormalize(simulator: Factory) -> None:
    client, _ = await simulator(*MATRYOSHKA)
    full = floats((await embed(client, input="nested dolls")).json()["data"][0])
    short = floats((await embed(client, input="nested dolls", dimensions=8)).json()["data"][0])
    assert short.tobytes() == embedding.shortened(full, 8).tobytes()
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-6)
    error = error_of(await embed(client, input="x", dimensions=12))
    assert error == {
        "message": f"Model '{MODEL}' only supports Matryoshka dimensions [8, 16, 32], got 12.",
        "type": "BadRequestError", "param": None, "code": 400,
    }  # fmt: skip


async def test_dimensions_on_a_model_without_matryoshka_are_refused(simulator: Factory) -> None:
    plain, _ = await simulator(*POOLING)
    error = error_of(await embed(plain, input="x", dimensions=8))
    assert error["message"] == (
        f"Model '{MODEL}' does not support Matryoshka embeddings; dimensions must be unset "
        "(received dimensions=8)."
    )
    # `is_matryoshka` without a list: any size from 1 to the model's.
    any_size, _ = await simulator(*POOLING, "--hf-overrides", '{"is_matryoshka": true}')
    assert len((await embed(any_size, input="x", dimensions=5)).json()["data"][0]["embedding"]) == 5
    error = error_of(await embed(any_size, input="x", dimensions=0))
    assert error["message"] == f"Model '{MODEL}' only supports dimensions in range [1, 32], got 0."


async def test_bad_inputs_answer_vllms_errors(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    refusals = {
        "You must pass at least one prompt": [],
        "The decoder prompt cannot be empty": "",  # this tokenizer adds no special tokens
        f"Token id {tokenizer.VOCAB_SIZE} is out of vocabulary": [5, tokenizer.VOCAB_SIZE],
        "Token id -1 is out of vocabulary": [[5], [-1]],
    }
    for message, value in refusals.items():
        error = error_of(await embed(client, input=value))
        assert error == {"message": message, "type": "BadRequestError", "param": None, "code": 400}
    assert error_of(await embed(client, input=[[7], []]))["message"] == (
        "The decoder prompt cannot be empty"
    )


async def test_inputs_longer_than_the_context_are_refused(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)  # --max-model-len 1024
    error = error_of(await embed(client, input=list(range(10, 1035))))  # 1025 ids
    assert error["param"] == "input_tokens"
    assert error["message"] == (
        "This model's maximum context length is 1024 tokens. However, your prompt contains "
        "at least 1025 input tokens, which exceeds this limit even without any output "
        "tokens. Please reduce the length of the input prompt. "
        "(parameter=input_tokens, value=1025)"
    )
    ids = error_of(await embed(client, input=list(range(10, 1040))))["message"]
    assert "your prompt contains 1030 input tokens" in ids  # token ids: the exact count
    text = error_of(await embed(client, input=["fine", "word " * 1100]))
    assert text["param"] == "input_tokens"
    assert "your prompt contains at least 1025 input tokens" in text["message"]
    chars = error_of(await embed(client, input="x" * 1_000_000))
    assert chars["param"] == "input_text"
    assert chars["message"].startswith(
        "This model's maximum context length is 1024 tokens. However, your prompt contains "
        "1000000 characters"
    )


async def test_truncate_prompt_tokens_keeps_the_start_or_the_end(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    ids = list(range(10, 1100))  # past the context: truncation makes it fit
    right = (await embed(client, input=ids, truncate_prompt_tokens=4)).json()
    left = (await embed(client, input=ids, truncate_prompt_tokens=4, truncation_side="left")).json()
    assert right["usage"]["prompt_tokens"] == left["usage"]["prompt_tokens"] == 4
    assert (
        right["data"][0]["embedding"]
        == (await embed(client, input=ids[:4])).json()["data"][0]["embedding"]
    )
    assert (
        left["data"][0]["embedding"]
        == (await embed(client, input=ids[-4:])).json()["data"][0]["embedding"]
    )
    whole = (await embed(client, input="word " * 2000, truncate_prompt_tokens=-1)).json()
    assert whole["usage"]["prompt_tokens"] == 1024
    error = error_of(await embed(client, input="x", truncate_prompt_tokens=1025))
    assert error["message"] == (
        "truncate_prompt_tokens value is greater than max_model_len. "
        "Please request a smaller truncation size."
    )


async def test_malformed_bodies_get_vllms_validation_errors(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    error = error_of(await embed(client, input="x", encoding_format="hex"))
    assert (error["type"], error["param"]) == ("Bad Request", "body.encoding_format")
    assert error["message"].startswith("1 validation error:\n  {'type': 'literal_error'")
    missing = error_of(await client.post("/v1/embeddings", json={"model": MODEL}))
    assert missing["param"] == "body.input"
    removed = error_of(await embed(client, input="x", normalize=True))
    assert removed == {
        "message": "Parameter `normalize` was removed; use `use_activation` instead. "
        "(parameter=normalize)",
        "type": "BadRequestError", "param": "normalize", "code": 400,
    }  # fmt: skip
    task = error_of(await embed(client, input="x", task="score"))
    assert (task["message"], task["param"]) == (
        "`score` task was removed; use `classify` instead. (parameter=task)",
        "task",
    )
    salt = error_of(await embed(client, input="x", cache_salt="a/b"))
    assert salt["message"] == (
        "Parameter 'cache_salt' must be at most 128 characters and must not contain "
        "'@', '/', '\\\\', or NUL. (parameter=cache_salt)"
    )


async def test_any_model_name_and_the_request_id_header(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    # vLLM's pooling routes refuse no model name; the answer names the served one.
    response = await client.post(
        "/v1/embeddings", json={"model": "other", "input": "x"}, headers={"X-Request-Id": "abc"}
    )
    assert (response.json()["model"], response.json()["id"]) == (MODEL, "embd-abc")
    by_body = await client.post("/v1/embeddings", json={"input": "x", "request_id": "r-1"})
    assert by_body.json()["id"] == "embd-r-1"


async def test_only_the_runners_routes_exist(simulator: Factory) -> None:
    pooling, _ = await simulator(*POOLING)
    for path in ("/v1/completions", "/v1/chat/completions"):
        response = await pooling.post(path, json={"model": MODEL, "prompt": "x"})
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    assert (await pooling.get("/v1/models")).json()["data"][0]["root"] == WEIGHTS
    assert (await pooling.post("/tokenize", json={"prompt": "a b"})).json()["count"] == 2
    generate, _ = await simulator()
    response = await embed(generate, input="x")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


async def test_a_batch_runs_its_inputs_at_once_and_counts_each(simulator: Factory) -> None:
    client, engine = await simulator(*POOLING[:-4], "--sim-ttft", "3600", "--sim-itl", "0")
    task = asyncio.ensure_future(embed(client, input=["a", "b c", "d e f"]))
    # Three engine requests, all running in the one step: none waits for another.
    await eventually(lambda: engine.scheduler.running == 3, what="three inputs prefilling")
    assert (engine.unfinished, engine.requests, engine.scheduler.waiting) == (3, 1, 0)
    task.cancel()
    await eventually(lambda: engine.scheduler.running == 0, what="the batch aborted")
    assert engine.unfinished == 0


async def test_metrics_count_one_finished_request_per_input(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING)
    texts = ["one", "two words", "three more words"]
    assert (await embed(client, input=texts)).status_code == 200
    page = (await client.get("/metrics")).text
    labels = {"model_name": MODEL, "engine": "0"}
    assert sample(page, "vllm:request_success_total", finished_reason="stop", **labels) == 3
    tokens = sum(tokenizer.count(t) for t in texts)
    assert sample(page, "vllm:prompt_tokens_total", **labels) == tokens
    assert sample(page, "vllm:generation_tokens_total", **labels) == 0
    assert sample(page, "vllm:request_prompt_tokens_count", **labels) == 3
    assert sample(page, "vllm:e2e_request_latency_seconds_count", **labels) == 3


async def test_each_input_counts_against_the_queue_limit(simulator: Factory) -> None:
    client, _ = await simulator(*POOLING, "--max-num-queued-reqs", "2")
    error = error_of(await embed(client, input=["a", "b", "c"]), 503)
    assert error["type"] == "Service Unavailable"
    assert (await embed(client, input=["a", "b"])).status_code == 200


def test_pooling_flags() -> None:
    from switchyard.enginesim.vllm.flags import parse

    assert parse(argv(), environ={}).runner == "generate"  # no checkpoint to look at
    assert parse(argv("--convert", "embed"), environ={}).runner == "pooling"
    assert parse(argv("--runner", "generate", "--convert", "embed"), environ={}).runner == (
        "generate"
    )
    config = parse(argv(*MATRYOSHKA), environ={})
    assert (config.pooling, config.is_matryoshka, config.embedding_size) == (True, True, 32)
    sized = parse(argv(*POOLING, "--hf-overrides", '{"embedding_size": 12}'), environ={})
    assert sized.embedding_size == 12


@pytest.mark.parametrize(
    "flags",
    [
        ("--runner", "pooling", "--convert", "classify"),
        ("--hf-overrides", "not json"),
        ("--hf-overrides", '{"matryoshka_dimensions": [0]}'),
        ("--sim-embedding-dimensions", "0"),
    ],
)
def test_bad_pooling_flags_are_refused(flags: tuple[str, ...]) -> None:
    from switchyard.enginesim.vllm.flags import parse

    with pytest.raises(SystemExit):
        parse(argv(*flags), environ={})


async def test_a_stall_fault_holds_an_embedding_until_cleared(simulator: Factory) -> None:
    client, engine = await simulator(*POOLING)
    assert (await client.post("/sim/faults", json={"stall_after": 0, "count": 1})).is_success
    task = asyncio.ensure_future(embed(client, input=["a", "b"]))
    await eventually(lambda: engine.scheduler.faults.stalled == 1, what="the request stalled")
    assert not task.done()
    assert (await client.delete("/sim/faults")).is_success
    assert (await task).status_code == 200
    # The fault was used up: the next request is not held.
    assert (await embed(client, input="c")).status_code == 200
