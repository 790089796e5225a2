"""How long TGI lets an output get: one 1024-token chunk checked, then re-queued chunks.

The router checks `inputs + min(max_new_tokens, 1024)` against `--max-total-tokens`, then
generates in chunks of at most 1024 tokens, re-queueing the request while fewer than
`max_new_tokens` were generated and the next chunk still fits (`validation.rs`,
`infer/mod.rs`). A `(a ){n}` grammar makes the output long enough to see every limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.enginesim.tgi.conftest import asgi_client, make_app

PROMPT = "The token at night"  # 4 tokens
LONG = {"type": "regex", "value": "a( a){5000}"}  # 5001 tokens if nothing stops it


@pytest.fixture
async def big() -> AsyncIterator[httpx.AsyncClient]:
    app = make_app("--max-input-tokens", "4000", "--max-total-tokens", "4096")
    async with asgi_client(app) as client:
        yield client


async def _generate(client: httpx.AsyncClient, inputs: str, **parameters: Any) -> httpx.Response:
    body = {"inputs": inputs, "parameters": {"details": True, **parameters}}
    return await client.post("/generate", json=body)


def _tokens(n: int) -> str:
    return " ".join(["token"] * n)


async def test_only_one_chunk_of_max_new_tokens_is_checked(big: httpx.AsyncClient) -> None:
    # 3000 + 2000 is over 4096, but 3000 + min(2000, 1024) is not.
    response = await _generate(big, _tokens(3000), max_new_tokens=2000)
    assert response.status_code == 200, response.text
    response = await _generate(big, _tokens(3100), max_new_tokens=2000)
    assert response.status_code == 422
    assert response.json()["error"] == (
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
        "Given: 3100 `inputs` tokens and 1024 `max_new_tokens`"
    )


@pytest.mark.parametrize(
    ("max_new_tokens", "generated"),
    [
        (1000, 1000),  # one chunk: exactly what was asked
        (1024, 1024),
        (1500, 2048),  # a second whole chunk: TGI overshoots max_new_tokens
        (5000, 3072),  # a fourth chunk would not fit: short of both limits
    ],
)
async def test_long_outputs_stop_at_chunk_ends(
    big: httpx.AsyncClient, max_new_tokens: int, generated: int
) -> None:
    response = await _generate(big, PROMPT, max_new_tokens=max_new_tokens, grammar=LONG)
    details = response.json()["details"]
    assert (details["generated_tokens"], details["finish_reason"]) == (generated, "length")
    assert response.headers["x-generated-tokens"] == str(generated)


@pytest.mark.parametrize("parameters", [{}, {"max_new_tokens": None}], ids=["absent", "null"])
async def test_without_max_new_tokens_the_output_may_fill_the_context(
    big: httpx.AsyncClient, parameters: dict[str, Any]
) -> None:
    response = await _generate(big, PROMPT, grammar=LONG, **parameters)
    details = response.json()["details"]
    assert (details["generated_tokens"], details["finish_reason"]) == (4096 - 4, "length")
    # Left free, the model ends by itself: past any default of 16 or 128 tokens.
    response = await _generate(big, PROMPT, seed=4, do_sample=True, **parameters)
    details = response.json()["details"]
    assert details["finish_reason"] == "eos_token"
    assert details["generated_tokens"] > 128


@pytest.mark.parametrize("max_tokens", [{}, {"max_tokens": None}], ids=["absent", "null"])
async def test_chat_and_completions_without_max_tokens_fill_the_context(
    big: httpx.AsyncClient, max_tokens: dict[str, Any]
) -> None:
    chat = {"messages": [{"role": "user", "content": "Go."}], "response_format": LONG}
    body = (await big.post("/v1/chat/completions", json={**chat, **max_tokens})).json()
    usage = body["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 4096
    assert body["choices"][0]["finish_reason"] == "length"
    completion = {"prompt": PROMPT, "seed": 4, **max_tokens}
    body = (await big.post("/v1/completions", json=completion)).json()
    assert body["choices"][0]["finish_reason"] == "stop"  # EOS, not a default length
    assert body["usage"]["completion_tokens"] > 128
