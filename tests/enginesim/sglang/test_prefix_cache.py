"""SGLang's radix cache, simulated: token-granular prefix reuse (`--page-size 1`), its
metrics, `cached_tokens` in meta_info and (with `--enable-cache-report`) in usage."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from switchyard.enginesim.vocabulary import WORDS
from tests.enginesim.sglang import shapes
from tests.enginesim.sglang.conftest import MODEL, asgi, engine_of, make_app
from tests.enginesim.vllm.test_routes import sample

PER_TOKEN = 0.0001
FAST = ("--sim-ttft", "0", "--sim-itl", "0", "--sim-prefill-per-token", str(PER_TOKEN))


def text(start: int, n: int) -> str:
    """A prompt of exactly `n` tokens (vocabulary words are one token each)."""
    return " ".join(WORDS[start : start + n])


async def generate(client: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
    response = await client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    meta: dict[str, Any] = response.json()["meta_info"]
    return meta


def cached_total(page: str) -> float:
    if "sglang:cached_tokens_total{" not in page:
        return 0.0  # the series appears with the first hit, as in SGLang
    return sample(page, "sglang:cached_tokens_total", cache_source="device")


def app(*extra: str) -> Starlette:
    return make_app(*FAST, "--enable-metrics", *extra)


async def test_a_shared_prefix_is_served_token_by_token() -> None:
    sim = app()
    engine = engine_of(sim)
    async with asgi(sim) as client:
        first = await generate(client, text(0, 50))
        assert first["cached_tokens"] == 0
        page = (await client.get("/metrics")).text
        assert sample(page, "sglang:cache_hit_rate") == 0
        assert cached_total(page) == 0
        ttft = engine.scheduler.first_token_s_total
        assert ttft == pytest.approx(PER_TOKEN * 50)

        second = await generate(client, text(0, 40) + " " + text(300, 10))
        assert second["prompt_tokens"] == 50
        assert second["cached_tokens"] == 40  # page size 1: every shared token
        page = (await client.get("/metrics")).text
        assert sample(page, "sglang:cache_hit_rate") == pytest.approx(40 / 50)
        assert cached_total(page) == 40
        assert sample(page, "sglang:prompt_tokens_total", is_streaming="false") == 100
        # Time to first token paid for the 10 new tokens only.
        assert engine.scheduler.first_token_s_total - ttft == pytest.approx(PER_TOKEN * 10)

        again = await generate(client, text(0, 50))
        assert again["cached_tokens"] == 49  # the last token is computed again


async def test_pages_round_the_prefix_down() -> None:
    async with asgi(app("--page-size", "16")) as client:
        await generate(client, text(0, 50))
        second = await generate(client, text(0, 40) + " " + text(300, 10))
        assert second["cached_tokens"] == 32


async def test_least_recently_used_tokens_are_evicted() -> None:
    # A pool of 100 tokens: two 50-token prompts.
    async with asgi(app("--max-total-tokens", "100")) as client:
        a, b, c = text(0, 50), text(100, 50), text(200, 50)
        assert (await generate(client, a))["cached_tokens"] == 0
        assert (await generate(client, b))["cached_tokens"] == 0
        assert (await generate(client, a))["cached_tokens"] == 49
        assert (await generate(client, c))["cached_tokens"] == 0  # evicts b
        assert (await generate(client, a))["cached_tokens"] == 49
        assert (await generate(client, b))["cached_tokens"] == 0


async def test_disable_radix_cache_never_hits() -> None:
    sim = app("--disable-radix-cache")
    async with asgi(sim) as client:
        for _ in range(2):
            assert (await generate(client, text(0, 50)))["cached_tokens"] == 0
        page = (await client.get("/metrics")).text
        assert sample(page, "sglang:cache_hit_rate") == 0
        assert cached_total(page) == 0
    assert engine_of(sim).scheduler.first_token_s_total == pytest.approx(2 * PER_TOKEN * 50)


@pytest.mark.parametrize("report", [False, True])
async def test_openai_usage_reports_cached_tokens_with_cache_report(report: bool) -> None:
    flags = ("--enable-cache-report",) if report else ()
    async with asgi(app(*flags)) as client:
        body = {"model": MODEL, "prompt": text(0, 50), "max_tokens": 2, "temperature": 0}
        for _ in range(2):
            response = await client.post("/v1/completions", json=body)
            assert response.status_code == 200, response.text
        shapes.completion_response(response.json())  # SGLang's own model writes it back
        details = response.json()["usage"]["prompt_tokens_details"]
        assert details == ({"cached_tokens": 49} if report else None)
        chat = {"model": MODEL, "messages": [{"role": "user", "content": text(0, 50)}]}
        for _ in range(2):
            response = await client.post("/v1/chat/completions", json=chat | {"max_tokens": 2})
        shapes.chat_response(response.json())
        cached = (response.json()["usage"]["prompt_tokens_details"] or {}).get("cached_tokens")
        assert (cached is not None and cached > 50) if report else cached is None
