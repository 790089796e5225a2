"""The native `/generate` API: bodies, cumulative and incremental streams, errors."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import validate

from switchyard.enginesim import tokenizer
from switchyard.enginesim.tokenizer import EOS_TOKEN_ID
from tests.enginesim.sglang.conftest import DETERMINISTIC, asgi, events, make_app

PROMPT = "The switchyard at dawn was"
LONG = " ".join(["word"] * 1100)  # 1100 tokens
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "score": {"type": "integer", "minimum": 0}},
    "required": ["name", "score"],
    "additionalProperties": False,
}


async def generate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/generate", json={"text": PROMPT, **body})


async def test_a_whole_response(client: httpx.AsyncClient) -> None:
    response = await generate(client, rid="r-1", sampling_params={"max_new_tokens": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"text", "output_ids", "meta_info"}
    meta = body["meta_info"]
    assert meta["id"] == "r-1"
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert meta["completion_tokens"] == len(body["output_ids"]) == 5
    assert meta["prompt_tokens"] == tokenizer.count(PROMPT)
    assert meta["cached_tokens"] == 0
    assert meta["weight_version"] == "default"
    assert meta["e2e_latency"] >= 0
    assert body["text"]


async def test_put_works_too(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}}
    )
    assert response.status_code == 200
    assert response.json()["meta_info"]["completion_tokens"] == 2


async def test_the_default_max_new_tokens_is_128(client: httpx.AsyncClient) -> None:
    response = await generate(client, sampling_params={"ignore_eos": True})
    assert response.json()["meta_info"]["finish_reason"] == {"type": "length", "length": 128}


async def test_end_of_sequence_is_a_stop_matching_the_eos_id(client: httpx.AsyncClient) -> None:
    body = (
        await generate(client, sampling_params={"max_new_tokens": 400, "sampling_seed": 3})
    ).json()
    meta = body["meta_info"]
    assert meta["finish_reason"] == {"type": "stop", "matched": EOS_TOKEN_ID}
    # The EOS token is generated and counted, not shown.
    assert body["output_ids"][-1] == EOS_TOKEN_ID
    assert meta["completion_tokens"] == len(body["output_ids"])
    assert "</s>" not in body["text"]


async def test_a_stop_string_is_matched_and_trimmed(client: httpx.AsyncClient) -> None:
    free = (
        await generate(client, sampling_params={"max_new_tokens": 60, "sampling_seed": 8})
    ).json()
    word = free["text"].split()[3]
    params = {"max_new_tokens": 60, "sampling_seed": 8, "stop": [word]}
    body = (await generate(client, sampling_params=params)).json()
    assert body["meta_info"]["finish_reason"] == {"type": "stop", "matched": word}
    assert body["text"] == free["text"][: free["text"].index(word)]


async def test_the_stream_is_cumulative(client: httpx.AsyncClient) -> None:
    params = {"max_new_tokens": 8, "sampling_seed": 5}
    response = await generate(client, stream=True, rid="s-1", sampling_params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    outs = events(response.text)
    assert len(outs) == 8
    previous = ""
    for i, out in enumerate(outs, 1):
        assert out["text"].startswith(previous)
        assert len(out["output_ids"]) == out["meta_info"]["completion_tokens"] == i
        assert out["meta_info"]["id"] == "s-1"
        previous = out["text"]
    assert all(o["meta_info"]["finish_reason"] is None for o in outs[:-1])
    assert outs[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 8}
    whole = (await generate(client, sampling_params=params)).json()
    assert outs[-1]["text"] == whole["text"]
    assert outs[-1]["output_ids"] == whole["output_ids"]


async def test_incremental_streaming_output_sends_deltas() -> None:
    params = {"max_new_tokens": 8, "sampling_seed": 5}
    async with asgi(make_app("--incremental-streaming-output", *DETERMINISTIC)) as client:
        outs = events((await generate(client, stream=True, sampling_params=params)).text)
        whole = (await generate(client, sampling_params=params)).json()
    assert all(len(o["output_ids"]) == 1 for o in outs)
    assert [o["meta_info"]["completion_tokens"] for o in outs] == list(range(1, 9))
    assert "".join(o["text"] for o in outs) == whole["text"]
    assert [i for o in outs for i in o["output_ids"]] == whole["output_ids"]


async def test_the_same_seed_gives_the_same_output(client: httpx.AsyncClient) -> None:
    async def text(**params: Any) -> str:
        body = (await generate(client, sampling_params={"max_new_tokens": 30, **params})).json()
        return str(body["text"])

    assert await text(sampling_seed=1) == await text(sampling_seed=1)
    assert await text(sampling_seed=1) != await text(sampling_seed=2)
    assert await text(temperature=0) == await text(temperature=0)


async def test_input_ids_are_a_prompt_too(client: httpx.AsyncClient) -> None:
    tokens = (await client.post("/tokenize", json={"prompt": "hello world"})).json()["tokens"]
    body = (
        await client.post(
            "/generate", json={"input_ids": tokens, "sampling_params": {"max_new_tokens": 2}}
        )
    ).json()
    assert body["meta_info"]["prompt_tokens"] == len(tokens)


@pytest.mark.parametrize(
    ("constraint", "check"),
    [
        (
            {"json_schema": orjson.dumps(SCHEMA).decode()},
            lambda t: validate(orjson.loads(t), SCHEMA),
        ),
        ({"regex": r"[A-Z]{3}-\d{4}"}, lambda t: re.fullmatch(r"[A-Z]{3}-\d{4}", t) or 1 / 0),
        (
            {"ebnf": 'root ::= ("yes" | "no") " " ("yes" | "no")'},
            lambda t: re.fullmatch(r"(yes|no) (yes|no)", t) or 1 / 0,
        ),
    ],
    ids=["json_schema", "regex", "ebnf"],
)
async def test_structured_outputs_conform(
    client: httpx.AsyncClient, constraint: dict[str, str], check: Any
) -> None:
    for seed in range(3):
        params = {"max_new_tokens": 200, "sampling_seed": seed, **constraint}
        body = (await generate(client, sampling_params=params)).json()
        assert body["meta_info"]["finish_reason"]["type"] == "stop"
        check(body["text"])


# Errors: each route and stage has its own body.


async def test_malformed_json_is_a_flat_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=b"{not json")
    assert response.status_code == 400
    body = response.json()
    assert body["object"] == "error"
    assert body["type"] == "Bad Request"
    assert body["code"] == 400
    assert "JSON decode error" in body["message"]
    # FastAPI parses with Python's json: its words, not orjson's.
    assert "Expecting property name enclosed in double quotes" in body["message"]


async def test_the_json_contract_refuses_unknown_sampling_params(client: httpx.AsyncClient) -> None:
    response = await generate(client, sampling_params={"max_tokens": 4})
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "unknown field `max_tokens`, expected one of `max_new_tokens`"
    )
    response = await generate(client, stream="yes")
    assert response.json() == {"error": 'invalid type: string "yes", expected a boolean'}


async def test_two_constraints_at_once_are_refused(client: httpx.AsyncClient) -> None:
    response = await generate(client, sampling_params={"regex": "a", "ebnf": 'root ::= "a"'})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": "Only one of json_schema, regex, ebnf, or structural_tag can be set."}
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": -1}, "temperature must be a non-negative finite number, got -1.0."),
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5."),
        ({"top_k": 0}, "top_k must be -1 (disable) or at least 1, got 0."),
        ({"max_new_tokens": -3}, "max_new_tokens must be at least 0, got -3."),
        ({"stop": ["x"] * 33}, "at most 32 stop strings are allowed, got 33"),
    ],
)
async def test_bad_sampling_params(
    client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await generate(client, sampling_params=params)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": message}}


async def test_a_field_sglang_cannot_take_is_a_server_error() -> None:
    # `choice` passes the JSON contract, but SGLang's SamplingParams has no such field.
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sglang") as client:
        response = await generate(client, sampling_params={"choice": ["a", "b"]})
    assert response.status_code == 500


async def test_context_overflow(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", json={"text": LONG})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "The input (1100 tokens) is longer than the model's context length (1024 tokens)."
        }
    }
    response = await generate(client, sampling_params={"max_new_tokens": 1020})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(
        "Requested token count exceeds the model's maximum context length of 1024 tokens."
    )
    used = tokenizer.count(PROMPT)
    assert f"{used} tokens from the input messages and 1020 tokens for the completion" in message


async def test_stream_errors_come_inside_a_200_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", json={"text": LONG, "stream": True})
    assert response.status_code == 200
    assert events(response.text) == [
        {
            "error": {
                "message": "The input (1100 tokens) is longer than the model's context length (1024 tokens).",
                "type": "invalid_request_error",
                "code": 400,
                "retryable": False,
            }
        }
    ]


async def test_a_grammar_that_does_not_compile(client: httpx.AsyncClient) -> None:
    response = await generate(client, sampling_params={"regex": "(("})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Failed to compile regex grammar:")
    # Streamed, it is the request's abort finish_reason.
    (out,) = events((await generate(client, stream=True, sampling_params={"regex": "(("})).text)
    finish = out["meta_info"]["finish_reason"]
    assert finish["type"] == "abort"
    assert finish["status_code"] == 400
    assert finish["err_type"] == "BadRequestError"


async def test_auto_truncate_shortens_instead_of_refusing() -> None:
    async with asgi(make_app("--allow-auto-truncate")) as client:
        body = (await client.post("/generate", json={"text": LONG})).json()
    assert body["meta_info"]["prompt_tokens"] == 1024
    assert body["meta_info"]["completion_tokens"] == 0


async def test_unknown_routes_are_fastapi_404s(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert (await client.get("/generate")).status_code == 405
