"""TGI's refusals: axum's plain-text rejections, the router's validation rules and messages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.enginesim.tgi.conftest import asgi_client, engine_of, make_app, sse_json


async def test_malformed_json_is_axums_400_in_plain_text(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/generate", content=b'{"inputs": "hi"', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("Failed to parse the request body as JSON: ")


async def test_a_body_of_the_wrong_shape_is_axums_422_in_plain_text(
    client: httpx.AsyncClient,
) -> None:
    cases = {
        '{"parameters": {}}': "missing field `inputs`",
        '{"inputs": "hi", "parameters": {"temperature": "hot"}}': (
            'parameters.temperature: invalid type: string "hot", expected f32'
        ),
        '{"inputs": "hi", "parameters": {"max_new_tokens": -1}}': (
            "parameters.max_new_tokens: invalid value: integer `-1`, expected u32"
        ),
        '{"inputs": "hi", "parameters": {"stop": "x"}}': "expected a sequence",
        '{"inputs": "hi", "parameters": {"grammar": {"type": "ebnf", "value": "x"}}}': (
            "unknown variant `ebnf`, expected one of `json`, `json_object`, `regex`, `json_schema`"
        ),
        "[1, 2]": "expected struct GenerateRequest",
    }
    for body, fragment in cases.items():
        response = await client.post(
            "/generate", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.startswith(
            "Failed to deserialize the JSON body into the target type: "
        )
        assert fragment in response.text, (body, response.text)


async def test_no_json_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=b'{"inputs": "hi"}')
    assert response.status_code == 415
    assert response.text == "Expected request with `Content-Type: application/json`"


async def test_a_body_over_the_payload_limit_is_413() -> None:
    async with asgi_client(make_app("--payload-limit", "100")) as client:
        response = await client.post("/generate", json={"inputs": "x" * 200})
    assert response.status_code == 413


def _body(**parameters: Any) -> dict[str, Any]:
    return {"inputs": "The token at night", "parameters": parameters}


RULES = [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"temperature": -1}, "`temperature` must be strictly positive"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 200. Given: 0"),
    (
        {"max_new_tokens": 300},
        "`inputs` tokens + `max_new_tokens` must be <= 256. Given: 4 `inputs` tokens and 300 "
        "`max_new_tokens`",
    ),
    (
        {"grammar": {"type": "json", "value": {"type": "object"}}},
        "grammar is not valid: Grammar must have a 'properties' field",
    ),
    ({"grammar": {"type": "json", "value": {"type": 7, "properties": {}}}}, "grammar is not valid"),
    ({"grammar": {"type": "json", "value": 3}}, "grammar is not supported"),
]


@pytest.mark.parametrize(("parameters", "message"), RULES)
async def test_validation_rules(
    client: httpx.AsyncClient, parameters: dict[str, Any], message: str
) -> None:
    response = await client.post("/generate", json=_body(**parameters))
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation"
    assert body["error"].startswith(f"Input validation error: {message}"), body


async def test_empty_inputs(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", json={"inputs": ""})
    assert response.json()["error"] == "Input validation error: `inputs` cannot be empty"


async def test_context_overflow_without_max_new_tokens(client: httpx.AsyncClient) -> None:
    # No max_new_tokens: TGI fills the context, so only the prompt can overflow it.
    inputs = " ".join(["token"] * 300)
    response = await client.post("/generate", json={"inputs": inputs})
    assert response.status_code == 422
    assert response.json()["error"] == (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 256. "
        "Given: 300 `inputs` tokens and 0 `max_new_tokens`"
    )
    fits_total = " ".join(["token"] * 220)  # within 256, over --max-input-tokens 200
    response = await client.post("/generate", json={"inputs": fits_total})
    assert response.json()["error"] == (
        "Input validation error: `inputs` must have less than 200 tokens. Given: 220"
    )


async def test_truncate_keeps_the_end_of_the_input(client: httpx.AsyncClient) -> None:
    inputs = " ".join(["token"] * 250) + " night"
    body = {"inputs": inputs, "parameters": {"truncate": 3, "max_new_tokens": 2, "details": True}}
    response = await client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    tokens = await client.post("/tokenize", json={"inputs": inputs, "parameters": {"truncate": 3}})
    assert [t["text"] for t in tokens.json()] == [" token", " token", " night"]


async def test_disabled_grammar_support() -> None:
    async with asgi_client(make_app("--disable-grammar-support")) as client:
        body = _body(grammar={"type": "regex", "value": "a+"})
        response = await client.post("/generate", json=body)
    assert response.json()["error"] == "Input validation error: grammar is not supported"


async def test_stream_validation_errors_are_events_in_a_200(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        (
            {"best_of": 2, "do_sample": True},
            "`best_of` != 1 is not supported when streaming tokens",
        ),
        (
            {"decoder_input_details": True},
            "`decoder_input_details` == true is not supported when streaming tokens",
        ),
    ]
    for parameters, message in cases:
        response = await client.post("/generate_stream", json=_body(**parameters))
        assert response.status_code == 200
        assert sse_json(response.text) == [
            {"error": f"Input validation error: {message}", "error_type": "validation"}
        ]


async def test_chat_errors(client: httpx.AsyncClient) -> None:
    bad_role = {"messages": [{"role": "robot", "content": "hi"}]}
    response = await client.post("/v1/chat/completions", json=bad_role)
    assert response.status_code == 422
    assert response.json()["error_type"] == "template_error"
    assert response.json()["error"].startswith("Template error: ")
    # Found while templating: an HTTP error even when streaming.
    response = await client.post("/v1/chat/completions", json={**bad_role, "stream": True})
    assert response.status_code == 422
    # Found by validation: an OpenAI-shaped event in the stream, then [DONE].
    body = {"messages": [{"role": "user", "content": "hi"}], "top_p": 1.0, "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.text.endswith("data:[DONE]\n\n")
    assert sse_json(response.text) == [
        {
            "error": {
                "message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                "http_status_code": 422,
            }
        }
    ]


async def test_completions_refusals(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json={"prompt": "a", "suffix": "b"})
    assert response.json() == {
        "error": "Suffix is not supported and can be achieved by preprocessing the prompt.",
        "error_type": "suffix not supported",
    }
    response = await client.post("/v1/completions", json={"prompt": ["a"] * 5})
    assert response.json() == {
        "error": "Number of prompts exceeds the maximum allowed batch size of 4",
        "error_type": "batch size exceeded",
    }


async def test_a_shard_side_grammar_failure_is_a_424(client: httpx.AsyncClient) -> None:
    # The router passes regexes through; one the shard cannot use fails the generation.
    response = await client.post(
        "/generate", json=_body(grammar={"type": "regex", "value": "(?=a)b"})
    )
    assert response.status_code == 424
    assert response.json()["error_type"] == "generation"


async def test_failures_are_counted_by_kind(client: httpx.AsyncClient, app: Any) -> None:
    await client.post("/generate", json=_body(top_k=0))
    await client.post("/generate_stream", json=_body(top_k=0))
    assert engine_of(app).metrics.failures == {"validation": 2}
    assert engine_of(app).metrics.request_count == 2
