"""What the sampler makes of seeds and of a missing length, as SGLang's does."""

from __future__ import annotations

from typing import Any

import httpx

from switchyard.enginesim import tokenizer
from tests.enginesim.sglang.conftest import DETERMINISTIC, MODEL, asgi, make_app

PROMPT = "The switchyard at dawn was"
CONTEXT = 1024
#: Long enough that two free samples never agree by chance.
SAMPLED = {"max_new_tokens": 40, "ignore_eos": True}


async def _text(client: httpx.AsyncClient, **params: Any) -> str:
    body = (
        await client.post(
            "/generate", json={"text": PROMPT, "sampling_params": {**SAMPLED, **params}}
        )
    ).json()
    return str(body["text"])


async def test_without_deterministic_inference_the_seed_changes_nothing() -> None:
    """`sampling_seed` reaches the sampler only with --enable-deterministic-inference."""
    async with asgi(make_app()) as client:
        assert await _text(client, sampling_seed=1) != await _text(client, sampling_seed=1)
        assert await _text(client, temperature=0) == await _text(client, temperature=0)
        info = (await client.get("/server_info")).json()
    assert info["enable_deterministic_inference"] is False


async def test_the_simulators_own_seed_makes_every_request_reproducible() -> None:
    """--sim-seed (no engine has it) seeds every sample alike; a request's seed stays ignored."""
    async with asgi(make_app("--sim-seed", "5")) as client:
        assert await _text(client) == await _text(client, sampling_seed=1)


async def test_with_deterministic_inference_the_seed_decides() -> None:
    async with asgi(make_app(*DETERMINISTIC)) as client:
        assert await _text(client, sampling_seed=1) == await _text(client, sampling_seed=1)
        assert await _text(client, sampling_seed=1) != await _text(client, sampling_seed=2)
        # No seed: SGLang's deterministic sampler uses 42.
        assert await _text(client) == await _text(client, sampling_seed=42)
        info = (await client.get("/server_info")).json()
    assert info["enable_deterministic_inference"] is True


async def test_max_new_tokens_absent_is_128_and_null_is_the_rest_of_the_context(
    client: httpx.AsyncClient,
) -> None:
    async def finish(params: dict[str, Any]) -> Any:
        body = {"text": PROMPT, "sampling_params": {"ignore_eos": True, **params}}
        return (await client.post("/generate", json=body)).json()["meta_info"]["finish_reason"]

    assert await finish({}) == {"type": "length", "length": 128}
    # The scheduler's bound: max_req_len (context - 1) - prompt - 1.
    rest = CONTEXT - 2 - tokenizer.count(PROMPT)
    assert await finish({"max_new_tokens": None}) == {"type": "length", "length": rest}


async def test_the_chat_route_without_max_tokens_runs_to_the_end_of_the_context(
    client: httpx.AsyncClient,
) -> None:
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": MODEL, "messages": messages, "ignore_eos": True}
    for extra in ({}, {"max_tokens": None}, {"max_completion_tokens": None}):
        usage = (await client.post("/v1/chat/completions", json={**body, **extra})).json()["usage"]
        assert usage["completion_tokens"] == CONTEXT - 2 - usage["prompt_tokens"]
