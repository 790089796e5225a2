"""vLLM's error bodies and statuses, for every way a request can be refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from switchyard.enginesim.vllm.flags import parse
from switchyard.enginesim.vllm.routes import create_app
from tests.enginesim.vllm.conftest import FAST, MODEL, Factory, argv, events
from tests.support.polling import eventually


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert body["error"]["code"] == status
    error: dict[str, Any] = body["error"]
    return error


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    error = error_of(response, 400)
    assert error["type"] == "Bad Request"
    assert error["param"] == "body.10"
    assert error["message"].startswith("1 validation error:\n  {'type': 'json_invalid'")
    assert "'ctx': {'error': 'Expecting value'}" in error["message"]


async def test_wrong_content_type_and_missing_body(client: httpx.AsyncClient) -> None:
    error = error_of(await client.post("/v1/completions", content=b"x"), 400)
    assert error["message"] == (
        "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
    )
    assert error["param"] is None
    response = await client.post("/v1/completions", headers={"content-type": "application/json"})
    assert error_of(response, 400)["param"] == "body"


async def test_pydantic_errors_name_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={"model": MODEL})
    error = error_of(response, 400)
    assert (error["type"], error["param"]) == ("Bad Request", "body.messages")
    assert "'msg': 'Field required'" in error["message"]
    assert "'input': '<dict of 1 items>'" in error["message"]  # inputs are summarized
    too_many = {"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}
    assert (
        "at most 4 items"
        in error_of(await client.post("/v1/completions", json=too_many), 400)["message"]
    )


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"temperature": 2.5}, "temperature", "temperature must be in [0, 2], got 2.5."),
        ({"top_p": 0}, "top_p", "top_p must be in (0, 1], got 0.0."),
        ({"max_tokens": -5}, "max_tokens", "max_tokens must be at least 1, got -5."),
        (
            {"max_tokens": 4096},
            "max_tokens",
            "max_tokens=4096 cannot be greater than max_model_len=1024",
        ),
        ({"presence_penalty": 3}, None, "presence_penalty must be in [-2, 2], got 3.0."),
        ({"stop": [""]}, None, "stop cannot contain an empty string."),
        ({"n": 2, "temperature": 0}, None, "n must be 1 when using greedy sampling, got 2."),
        ({"stream_options": {"include_usage": True}}, "stream_options", "when `stream=True`"),
        (
            {"structured_outputs": {"regex": "a", "choice": ["b"]}},
            "structured_outputs",
            "You can only use one kind of constraints",
        ),
        (
            {"structured_outputs": {}},
            None,
            "You must use one kind of structured outputs constraint",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format",
            "the 'json_schema' field must be provided",
        ),
        ({"prompt": ""}, "prompt", "Either prompt or prompt_embeds must be provided"),
    ],
)
async def test_bad_parameters(
    client: httpx.AsyncClient, body: dict[str, Any], param: str | None, fragment: str
) -> None:
    response = await client.post("/v1/completions", json={"model": MODEL, "prompt": "x", **body})
    error = error_of(response, 400)
    assert error["type"] == "BadRequestError"
    assert error["param"] == param
    assert fragment in error["message"]


async def test_context_overflow(client: httpx.AsyncClient) -> None:
    tokens = await client.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 2000})
    error = error_of(tokens, 400)
    assert error["param"] == "input_tokens"
    assert error["message"] == (
        "This model's maximum context length is 1024 tokens. However, your prompt contains "
        "at least 1025 input tokens, which exceeds this limit even without any output tokens. "
        "Please reduce the length of the input prompt. (parameter=input_tokens, value=1025)"
    )
    chars = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 20000}]},
    )
    error = error_of(chars, 400)
    assert error["param"] == "input_text"
    assert error["message"].startswith("This model's maximum context length is 1024 tokens.")


async def test_output_is_clamped_to_the_context(client: httpx.AsyncClient) -> None:
    # vLLM 0.33 clamps max_tokens to what the prompt leaves, up to max_model_len itself.
    prompt = "word " * 1000
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1000, "ignore_eos": True}
    response = await client.post("/v1/completions", json=body)
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 1024
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_unknown_model_and_route(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    error = error_of(response, 404)
    assert error == {
        "message": f"The model `nope` does not exist. Valid aliases: {MODEL}.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    # Routing errors are Starlette's, which vLLM's handler (for fastapi.HTTPException, a
    # subclass) does not catch: FastAPI's own body.
    nothing = await client.get("/v1/nothing")
    assert (nothing.status_code, nothing.json()) == (404, {"detail": "Not Found"})
    wrong = await client.get("/v1/completions")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
    assert wrong.headers["allow"] == "POST"


async def test_bad_constraints_fail_before_or_inside_the_stream(client: httpx.AsyncClient) -> None:
    bad = {"model": MODEL, "prompt": "x", "structured_outputs": {"regex": "(unclosed"}}
    error = error_of(await client.post("/v1/completions", json=bad), 400)
    assert error["message"].startswith("Failed to transform regex into a grammar:")
    # A stream has already answered 200: the error is an event, then [DONE].
    response = await client.post("/v1/completions", json={**bad, "stream": True})
    assert response.status_code == 200
    (event,) = events(response.text)
    assert event["error"]["code"] == 400
    assert ", " in response.text  # vLLM writes this event with json.dumps' separators
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "structured_outputs": {"grammar": 'root ::= "unterminated'},
        "stream": True,
    }
    streamed = await client.post("/v1/chat/completions", json=chat)
    assert (
        ", " in streamed.text
    )  # json.dumps' separators here too (`create_streaming_error_response`)
    (event,) = events(streamed.text)
    assert event == {
        "error": {
            "message": "Invalid grammar specification.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }


async def test_queue_full_is_503_and_counted(simulator: Factory) -> None:
    client, sim = await simulator(
        "--max-num-seqs", "1", "--max-num-queued-reqs", "2", "--sim-ttft", "0", "--sim-itl", "0.05"
    )
    body = {"model": MODEL, "prompt": "x", "max_tokens": 20, "ignore_eos": True}
    # The running request holds its slot (stalled) until the third has been refused.
    await client.post("/sim/faults", json={"stall_after": 1, "count": 1})
    running = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(2)]
    await eventually(
        lambda: (sim.scheduler.running, sim.scheduler.waiting) == (1, 1), what="1 running, 1 queued"
    )
    refused = await client.post("/v1/completions", json=body)
    error = error_of(refused, 503)
    assert error == {
        "message": "The engine is currently busy and cannot accept new requests. "
        "Please try again later or on a different instance.",
        "type": "Service Unavailable",
        "param": None,
        "code": 503,
    }
    metrics = (await client.get("/metrics")).text
    assert (
        'vllm:admission_rejections_total{model_name="demo",reason="max_num_queued_reqs"} 1.0'
        in metrics
    )
    await client.delete("/sim/faults")
    assert all(r.status_code == 200 for r in await asyncio.gather(*running))
    stats = (await client.get("/sim/stats")).json()
    assert (stats["rejected"], stats["completed"], stats["in_flight"]) == (1, 2, 0)
    assert sim.unfinished == 0


async def test_api_key(simulator: Factory) -> None:
    client, _ = await simulator("--api-key", "s3cret", "--sim-ttft", "0", "--sim-itl", "0")
    assert (await client.get("/v1/models")).json() == {"error": "Unauthorized"}
    assert (await client.get("/v1/models")).status_code == 401
    assert (await client.get("/health")).status_code == 200
    ok = await client.get("/v1/models", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("flag", "environ", "accepted", "refused"),
    [
        ((), {"VLLM_API_KEY": "from-env"}, "from-env", "other"),
        (("--api-key", "from-flag"), {"VLLM_API_KEY": "from-env"}, "from-flag", "from-env"),
        (("--api-key", "a", "b"), {}, "b", "c"),
    ],
    ids=["env", "flag-wins", "several-keys"],
)
async def test_api_key_sources(
    flag: tuple[str, ...], environ: dict[str, str], accepted: str, refused: str
) -> None:
    # vLLM's init_entrypoints_middleware: `args.api_key or [envs.VLLM_API_KEY]`.
    app = create_app(parse(argv(*flag, *FAST), environ))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        for path in ("/v1/models", "/v2/anything", "/inference/v1/generate", "/cohere/x"):
            refusal = await client.get(path, headers={"authorization": f"Bearer {refused}"})
            assert (refusal.status_code, refusal.json()) == (401, {"error": "Unauthorized"})
        ok = await client.get("/v1/models", headers={"authorization": f"Bearer {accepted}"})
        assert ok.status_code == 200
        assert (
            await client.get("/v1/models", headers={"authorization": accepted})
        ).status_code == 401
        assert (await client.get("/version")).status_code == 200  # outside the prefixes


async def test_an_empty_api_key_variable_guards_nothing() -> None:
    app = create_app(parse(argv(*FAST), {"VLLM_API_KEY": ""}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        assert (await client.get("/v1/models")).status_code == 200
