"""TGI's prefix caching, simulated: the launcher's `ATTENTION` / `PREFIX_CACHING` rules,
the radix allocator's reuse (block size 1 with flashinfer) and the prefill figures TGI
exports (`tgi_batch_forward_duration{method="prefill"}`: the modelled prefill time)."""

from __future__ import annotations

import httpx
import pytest

from switchyard.enginesim.tgi.flags import parse
from switchyard.enginesim.vocabulary import WORDS
from tests.enginesim.tgi.conftest import BASE_ARGS, asgi_client, engine_of, make_app

PER_TOKEN = 0.0001
PREFILL = ("--sim-prefill-per-token", str(PER_TOKEN))
FORWARD = 'tgi_batch_forward_duration_sum{method="prefill"}'


def text(start: int, n: int) -> str:
    """An input of exactly `n` tokens (vocabulary words are one token each)."""
    return " ".join(WORDS[start : start + n])


def metric(page: str, series: str) -> float:
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in the exposition")


async def generate(client: httpx.AsyncClient, inputs: str) -> None:
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 2}}
    response = await client.post("/generate", json=body)
    assert response.status_code == 200, response.text


async def prefill_s(client: httpx.AsyncClient) -> float:
    return metric((await client.get("/metrics")).text, FORWARD)


async def test_a_shared_prefix_is_not_prefilled_again() -> None:
    app = make_app(*PREFILL)
    async with asgi_client(app) as client:
        assert "tgi_batch_forward_duration" not in (await client.get("/metrics")).text
        await generate(client, text(0, 50))
        first = await prefill_s(client)
        assert first == pytest.approx(PER_TOKEN * 50)
        await generate(client, text(0, 40) + " " + text(300, 10))
        second = await prefill_s(client) - first
        assert second == pytest.approx(PER_TOKEN * 10)  # flashinfer: blocks of one token
        await generate(client, text(0, 50))
        page = (await client.get("/metrics")).text
        assert metric(page, FORWARD) - first - second == pytest.approx(PER_TOKEN * 1)
        assert metric(page, 'tgi_batch_inference_count{method="prefill"}') == 3
        assert metric(page, 'tgi_batch_inference_success{method="prefill"}') == 3
        assert metric(page, 'tgi_batch_forward_duration_count{method="prefill"}') == 3
    # What the requests' time to first token was modelled on.
    assert engine_of(app).scheduler.first_token_s_total == pytest.approx(PER_TOKEN * 61)


async def test_least_recently_used_blocks_are_evicted() -> None:
    # A KV cache of 256 tokens: two 128-token inputs.
    async with asgi_client(make_app(*PREFILL, "--max-batch-total-tokens", "256")) as client:
        spent = 0.0

        async def uncached(inputs: str) -> float:
            nonlocal spent
            await generate(client, inputs)
            now = await prefill_s(client)
            tokens, spent = round((now - spent) / PER_TOKEN), now
            return tokens

        a, b, c = text(0, 128), text(128, 128), text(256, 128)
        assert await uncached(a) == 128
        assert await uncached(b) == 128
        assert await uncached(a) == 1
        assert await uncached(c) == 128  # evicts b, the least recently used
        assert await uncached(a) == 1
        assert await uncached(b) == 128


@pytest.mark.parametrize(
    ("env", "cached"),
    [({"PREFIX_CACHING": "0"}, False), ({"ATTENTION": "paged"}, False),
     ({"ATTENTION": "flashdecoding"}, True), ({}, True)],
)  # fmt: skip
def test_the_launchers_attention_rules(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], cached: bool
) -> None:
    for name in ("PREFIX_CACHING", "ATTENTION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = parse(list(BASE_ARGS))
    assert config.prefix_caching is cached
    assert config.block_size == {"paged": 16, "flashdecoding": 256}.get(env.get("ATTENTION", ""), 1)


def test_vision_models_and_paged_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFIX_CACHING", raising=False)
    monkeypatch.delenv("ATTENTION", raising=False)
    assert not parse([*BASE_ARGS, "--sim-multimodal"]).prefix_caching
    monkeypatch.setenv("PREFIX_CACHING", "1")
    monkeypatch.setenv("ATTENTION", "paged")
    with pytest.raises(SystemExit):
        parse(list(BASE_ARGS))  # "Prefix caching is only supported with flashinfer"
    monkeypatch.setenv("ATTENTION", "flashinfer")
    with pytest.raises(SystemExit):
        parse([*BASE_ARGS, "--max-batch-total-tokens", "100"])  # below --max-total-tokens


async def test_without_prefix_caching_every_token_is_prefilled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFIX_CACHING", "0")
    async with asgi_client(make_app(*PREFILL)) as client:
        for _ in range(2):
            await generate(client, text(0, 50))
        assert await prefill_s(client) == pytest.approx(2 * PER_TOKEN * 50)
