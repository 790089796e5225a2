"""How long vLLM 0.33 lets a request generate: defaults, null, clamping and the limits' errors.

From vLLM's code: `CompletionRequest.max_tokens` defaults to 16 and `normalize_null_max_tokens`
turns an explicit null into that default too; chat's `max_tokens`/`max_completion_tokens`
default to None, which `get_max_tokens` reads as the room the prompt leaves. A limit above
`max_model_len` is refused (`TokenizeParams`); one that only overflows with the prompt is
clamped; a prompt that leaves no room at all ends as `max_tokens` 0, which
`SamplingParams` refuses.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.enginesim.vllm.conftest import MODEL

CONTEXT = 1024  # the fixture's --max-model-len
CHAT = [{"role": "user", "content": "Tell me everything."}]


async def _usage(client: httpx.AsyncClient, path: str, **body: Any) -> tuple[int, int]:
    response = await client.post(path, json={"model": MODEL, "ignore_eos": True, **body})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


@pytest.mark.parametrize("limit", [{}, {"max_tokens": None}], ids=["absent", "null"])
async def test_completions_stop_at_16_without_a_limit(
    client: httpx.AsyncClient, limit: dict[str, Any]
) -> None:
    _, completion = await _usage(client, "/v1/completions", prompt="Once upon", **limit)
    assert completion == 16


@pytest.mark.parametrize(
    "limit",
    [{}, {"max_tokens": None}, {"max_completion_tokens": None}],
    ids=["absent", "null", "null-completion-tokens"],
)
async def test_chat_fills_the_context_without_a_limit(
    client: httpx.AsyncClient, limit: dict[str, Any]
) -> None:
    prompt, completion = await _usage(client, "/v1/chat/completions", messages=CHAT, **limit)
    assert prompt + completion == CONTEXT


@pytest.mark.parametrize(
    ("path", "source", "field"),
    [
        ("/v1/completions", {"prompt": "Once upon"}, "max_tokens"),
        ("/v1/chat/completions", {"messages": CHAT}, "max_completion_tokens"),
        ("/v1/chat/completions", {"messages": CHAT}, "max_tokens"),
    ],
)
async def test_a_limit_of_the_whole_context_is_clamped_to_what_is_left(
    client: httpx.AsyncClient, path: str, source: dict[str, Any], field: str
) -> None:
    prompt, completion = await _usage(client, path, **source, **{field: CONTEXT})
    assert prompt + completion == CONTEXT
    over = await client.post(path, json={"model": MODEL, **source, field: CONTEXT + 1})
    assert over.status_code == 400
    assert over.json()["error"]["message"].startswith(
        f"{field}={CONTEXT + 1} cannot be greater than max_model_len={CONTEXT}."
    )


async def test_a_prompt_that_fills_the_context_leaves_max_tokens_zero(
    client: httpx.AsyncClient,
) -> None:
    prompt = "word " * (CONTEXT - 1)
    tokenized = await client.post("/tokenize", json={"model": MODEL, "prompt": prompt})
    assert tokenized.json()["count"] == CONTEXT
    response = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": CONTEXT}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }
