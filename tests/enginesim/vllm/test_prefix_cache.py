"""vLLM's prefix cache, simulated: hits in 16-token blocks, LRU eviction, the counters and
the prefill time of the uncached tokens (read from the recorded model, not the clock)."""

from __future__ import annotations

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from switchyard.enginesim import tokenizer
from switchyard.enginesim.vocabulary import WORDS
from tests.enginesim.vllm.conftest import MODEL, Factory, events
from tests.enginesim.vllm.test_routes import sample

PER_TOKEN = 0.0001  # --sim-prefill-per-token: 0.1 ms per uncached token
FAST = ("--sim-ttft", "0", "--sim-itl", "0", "--sim-prefill-per-token", str(PER_TOKEN))


def text(start: int, n: int) -> str:
    """A prompt of exactly `n` tokens (vocabulary words are one token each); prompts from
    different `start`s share no first token."""
    return " ".join(WORDS[start : start + n])


def cached_prefix(first: str, second: str, block: int = 16) -> int:
    """The tokens of `second` a cache holding `first` serves: whole shared blocks, short of
    the last token (vLLM recomputes it for its logits)."""
    a, b = tokenizer.encode(first), tokenizer.encode(second)
    common = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return min(common, len(b) - 1) // block * block


async def complete(client: httpx.AsyncClient, prompt: str) -> int:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 2, "temperature": 0}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    tokens = response.json()["usage"]["prompt_tokens"]
    assert isinstance(tokens, int)
    return tokens


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    page = (await client.get("/metrics")).text
    return {
        "queries": sample(page, "vllm:prefix_cache_queries_total"),
        "hits": sample(page, "vllm:prefix_cache_hits_total"),
        "cached": sample(page, "vllm:prompt_tokens_cached_total"),
        "device": sample(page, "vllm:prompt_tokens_cached_by_source_total", source="device"),
        "hit_source": sample(page, "vllm:prompt_tokens_by_source_total", source="local_cache_hit"),
        "compute": sample(page, "vllm:prompt_tokens_by_source_total", source="local_compute"),
        "computed_kv": sample(page, "vllm:request_prefill_kv_computed_tokens_sum"),
        "prefill_s": sample(page, "vllm:request_prefill_time_seconds_sum"),
    }


async def test_a_repeated_prefix_hits_in_whole_blocks(simulator: Factory) -> None:
    client, _ = await simulator(*FAST)
    first = text(0, 60)
    second = first + " and then something else entirely"
    n1 = await complete(client, first)
    miss = await counters(client)
    assert (miss["queries"], miss["hits"], miss["cached"]) == (n1, 0, 0)
    assert miss["prefill_s"] == pytest.approx(PER_TOKEN * n1)

    n2 = await complete(client, second)
    hit = cached_prefix(first, second)
    assert 0 < hit < n2
    assert hit % 16 == 0
    after = await counters(client)
    assert after["queries"] == n1 + n2
    assert after["hits"] == after["cached"] == after["device"] == after["hit_source"] == hit
    assert after["compute"] == n1 + n2 - hit
    assert after["computed_kv"] == n1 + n2 - hit
    # Time to first token pays only for the uncached tokens.
    assert after["prefill_s"] - miss["prefill_s"] == pytest.approx(PER_TOKEN * (n2 - hit))


async def test_the_same_prompt_again_recomputes_its_last_block(simulator: Factory) -> None:
    client, _ = await simulator(*FAST)
    prompt = text(60, 40)
    n = await complete(client, prompt)
    await complete(client, prompt)
    after = await counters(client)
    assert after["hits"] == (n - 1) // 16 * 16  # the last token is always computed


async def test_a_growing_chat_hits_its_earlier_turns(simulator: Factory) -> None:
    client, _ = await simulator(*FAST)
    messages = [{"role": "user", "content": text(100, 50)}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0}
    first = (await client.post("/v1/chat/completions", json=body)).json()
    n1 = first["usage"]["prompt_tokens"]
    messages += [first["choices"][0]["message"], {"role": "user", "content": "and more?"}]
    await client.post("/v1/chat/completions", json=body | {"messages": messages})
    after = await counters(client)
    # The second prompt starts with the whole first one: its full blocks are served.
    assert after["hits"] >= (n1 - 1) // 16 * 16 > 0


async def test_least_recently_used_blocks_are_evicted(simulator: Factory) -> None:
    # Four blocks: two prompts of two full blocks each.
    client, _ = await simulator(*FAST, "--num-gpu-blocks-override", "4")
    prompts = {w: text(start, 40) for w, start in (("delta", 210), ("echo", 250), ("foxtrot", 290))}
    hits = 0.0

    async def hit(word: str) -> float:
        nonlocal hits
        await complete(client, prompts[word])
        now = (await counters(client))["hits"]
        gained, hits = now - hits, now
        return gained

    assert await hit("delta") == 0
    assert await hit("echo") == 0
    assert await hit("delta") == 32  # both held; delta is now the most recent
    assert await hit("foxtrot") == 0  # evicts echo, the least recently used
    assert await hit("delta") == 32
    assert await hit("echo") == 0


async def test_disabled_cache_never_hits(simulator: Factory) -> None:
    client, engine = await simulator(*FAST, "--no-enable-prefix-caching")
    assert not engine.config.enable_prefix_caching
    prompt = text(0, 60)
    n = await complete(client, prompt)
    await complete(client, prompt)
    after = await counters(client)
    assert (after["queries"], after["hits"], after["cached"]) == (0, 0, 0)
    assert after["computed_kv"] == 2 * n
    assert after["prefill_s"] == pytest.approx(2 * PER_TOKEN * n)


async def test_streams_pay_only_for_uncached_tokens(simulator: Factory) -> None:
    client, _ = await simulator(*FAST)
    prompt = text(150, 60)
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "stream": True}
    for _ in range(2):
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            await response.aread()
    n = len(tokenizer.encode(prompt))
    after = await counters(client)
    hit = (n - 1) // 16 * 16
    assert after["hits"] == hit
    assert after["prefill_s"] == pytest.approx(PER_TOKEN * (2 * n - hit))


async def test_prompt_tokens_details_only_when_enabled(simulator: Factory) -> None:
    client, _ = await simulator(*FAST)
    prompt = text(0, 40)
    for _ in range(2):
        body = (
            await client.post("/v1/completions", json={"model": MODEL, "prompt": prompt})
        ).json()
    assert body["usage"]["prompt_tokens_details"] is None  # the cache hit, unreported


async def test_prompt_tokens_details_report_cached_tokens(simulator: Factory) -> None:
    client, _ = await simulator(*FAST, "--enable-prompt-tokens-details")
    first, second = text(0, 40), text(100, 40)
    request = {"model": MODEL, "prompt": [first, second], "max_tokens": 2}
    cold = (await client.post("/v1/completions", json=request)).json()
    assert cold["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0, "created_cache_tokens": None, "multimodal_tokens": None,
    }  # fmt: skip
    # vLLM reports the last prompt's count: warm only the second.
    await complete(client, second)
    warm = (await client.post("/v1/completions", json=request)).json()
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] == 32
    Completion.model_validate(warm)

    messages = [{"role": "user", "content": text(200, 60)}]
    chat = {"model": MODEL, "messages": messages, "max_tokens": 2}
    cold = (await client.post("/v1/chat/completions", json=chat)).json()
    n = cold["usage"]["prompt_tokens"]
    assert cold["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0, "created_cache_tokens": n // 16 * 16, "multimodal_tokens": None,
    }  # fmt: skip
    warm = (await client.post("/v1/chat/completions", json=chat)).json()
    hit = (n - 1) // 16 * 16
    assert warm["usage"]["prompt_tokens_details"] == {
        "cached_tokens": hit, "created_cache_tokens": n // 16 * 16 - hit,
        "multimodal_tokens": None,
    }  # fmt: skip
    usage = ChatCompletion.model_validate(warm).usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == hit

    stream = chat | {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
        chunks = events((await response.aread()).decode())
    # The usage chunk leaves nulls out.
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": hit, "created_cache_tokens": n // 16 * 16 - hit,
    }  # fmt: skip
    ChatCompletionChunk.model_validate(chunks[-1])
