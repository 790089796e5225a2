"""Reasoning, logprobs, `n` and images on the chat route, in SGLang's shapes."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
from PIL import Image

from tests.enginesim.sglang import shapes
from tests.enginesim.sglang.conftest import MODEL, asgi, events, make_app

ASK = [{"role": "user", "content": "Describe a switchyard."}]
REASONING = ("--reasoning-parser", "qwen3")


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    request = {"model": MODEL, "messages": ASK, "temperature": 0, "max_tokens": 80, **body}
    return await client.post("/v1/chat/completions", json=request)


def streamed(response: httpx.Response) -> list[dict[str, Any]]:
    chunks = events(response.text)
    for chunk in chunks:
        shapes.chat_chunk(chunk)
    return chunks


def text_of(chunks: list[dict[str, Any]], field: str, index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get(field) or ""
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


# --- reasoning ---------------------------------------------------------------------------


async def test_a_reasoning_parser_keeps_the_thinking_apart() -> None:
    async with asgi(make_app(*REASONING)) as client:
        body = (await chat(client)).json()
        chunks = streamed(await chat(client, stream=True, stream_options={"include_usage": True}))
        plain = (await chat(client, separate_reasoning=False)).json()
        off = (await chat(client, chat_template_kwargs={"enable_thinking": False})).json()
    shapes.chat_response(body)
    message = body["choices"][0]["message"]
    assert message["reasoning_content"]
    assert "<think>" not in message["content"] + message["reasoning_content"]
    usage = body["usage"]
    assert usage["reasoning_tokens"] > 0
    assert usage["completion_tokens_details"] == {"reasoning_tokens": usage["reasoning_tokens"]}
    # Streamed: the reasoning first, then the answer, the same texts.
    assert text_of(chunks, "reasoning_content") == message["reasoning_content"]
    assert text_of(chunks, "content") == message["content"]
    kinds = [k for c in chunks[1:-2] for k in ("reasoning_content", "content")
             if c["choices"][0]["delta"].get(k)]  # fmt: skip
    assert kinds == sorted(kinds, key=lambda k: k == "content")
    assert chunks[-1]["usage"]["reasoning_tokens"] == usage["reasoning_tokens"]
    # Unseparated, the thinking is in the content; Qwen3's switch turns it off.
    assert plain["choices"][0]["message"]["content"].startswith("<think>")
    assert plain["choices"][0]["message"]["reasoning_content"] is None
    assert off["choices"][0]["message"]["reasoning_content"] is None
    assert off["usage"]["reasoning_tokens"] == 0


async def test_who_thinks_depends_on_the_parser() -> None:
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    async with asgi(make_app(*REASONING)) as client:
        effortless = (await chat(client, reasoning_effort="none")).json()
    async with asgi(make_app("--reasoning-parser", "deepseek-r1")) as client:
        r1 = (await chat(client, **off)).json()
    assert effortless["choices"][0]["message"]["reasoning_content"] is None
    assert r1["choices"][0]["message"]["reasoning_content"]  # DeepSeek-R1 always thinks


async def test_without_a_reasoning_parser_the_model_does_not_think() -> None:
    async with asgi(make_app()) as client:
        body = (await chat(client)).json()
    assert body["choices"][0]["message"]["reasoning_content"] is None
    assert "<think>" not in body["choices"][0]["message"]["content"]
    assert (body["usage"]["reasoning_tokens"], body["usage"]["completion_tokens_details"]) == (
        0,
        None,
    )


async def test_unstreamed_reasoning_comes_whole() -> None:
    async with asgi(make_app(*REASONING)) as client:
        chunks = streamed(await chat(client, stream=True, stream_reasoning=False))
        body = (await chat(client)).json()
    pieces = [
        c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("reasoning_content")
    ]
    assert len(pieces) == 1
    assert (
        pieces[0]["choices"][0]["delta"]["reasoning_content"]
        == (body["choices"][0]["message"]["reasoning_content"])
    )


# --- logprobs ----------------------------------------------------------------------------


async def test_logprobs_cover_every_output_token() -> None:
    async with asgi(make_app()) as client:
        body = (await chat(client, logprobs=True, top_logprobs=3, max_tokens=12)).json()
        chunks = streamed(
            await chat(client, logprobs=True, top_logprobs=3, max_tokens=12, stream=True)
        )
        ended = (await chat(client, logprobs=True, max_tokens=400)).json()
    shapes.chat_response(body)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"] == 12
    assert "".join(t["token"] for t in content) == body["choices"][0]["message"]["content"]
    for token in content:
        alternatives = token["top_logprobs"]
        assert len(alternatives) == 3
        assert len({a["token"] for a in alternatives}) == 3
        assert [a["logprob"] for a in alternatives] == sorted(
            (a["logprob"] for a in alternatives), reverse=True
        )
        # Greedy: the chosen token is the most likely one.
        assert alternatives[0]["token"] == token["token"]
        assert token["logprob"] <= 0
        assert token["bytes"] == list(token["token"].encode())
    stream_content = [t for c in chunks if c["choices"] and c["choices"][0]["logprobs"]
                      for t in c["choices"][0]["logprobs"]["content"]]  # fmt: skip
    assert stream_content == content
    # The end of the output (EOS) has its logprob too, as SGLang reports every output id.
    shapes.chat_response(ended)
    tokens = ended["choices"][0]["logprobs"]["content"]
    assert ended["choices"][0]["finish_reason"] == "stop"
    assert len(tokens) == ended["usage"]["completion_tokens"]
    assert tokens[-1]["token"] == "</s>"
    assert all(t["top_logprobs"] == [] for t in tokens)


# --- n -----------------------------------------------------------------------------------


async def test_n_samples_are_choices_of_one_answer() -> None:
    async with asgi(make_app("--sim-seed", "7")) as client:
        body = (await chat(client, n=3, temperature=1.0, rid="mine")).json()
        one = (await chat(client, temperature=1.0)).json()
        two = (await chat(client, n=2, temperature=1.0)).json()
        chunks = streamed(
            await chat(client, n=2, temperature=1.0, stream=True,
                       stream_options={"include_usage": True})
        )  # fmt: skip
    shapes.chat_response(body)
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 3
    assert body["id"] != "mine"  # each sample has a fresh rid: the answer takes the first's
    usage = body["usage"]
    assert usage["prompt_tokens"] == one["usage"]["prompt_tokens"]  # counted once
    assert usage["completion_tokens"] > one["usage"]["completion_tokens"]
    # Streamed: both choices' deltas, then both finishes, then the usage of both.
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert sorted(c["choices"][0]["index"] for c in finishes) == [0, 1]
    assert chunks.index(finishes[0]) > max(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("content")
    )
    # The simulator's seed makes sampled outputs repeatable: the stream is the same answer.
    assert [text_of(chunks, "content", i) for i in (0, 1)] == [
        c["message"]["content"] for c in two["choices"]
    ]
    assert chunks[-1]["usage"] == two["usage"]


# --- images ------------------------------------------------------------------------------


def image_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "green").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def with_image(url: str, count: int = 1) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}}] * count
    return [{"role": "user", "content": parts}]


async def test_a_text_only_model_refuses_images() -> None:
    async with asgi(make_app()) as client:
        response = await chat(client, messages=with_image(image_url(8, 8)))
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Model only supports text input; received unsupported content type 'image_url'."
    )


async def test_an_image_counts_its_cells_in_the_prompt() -> None:
    async with asgi(
        make_app("--sim-multimodal", "--limit-mm-data-per-request", '{"image": 2}')
    ) as client:
        small = (await chat(client, messages=with_image(image_url(28, 28)))).json()
        large = (await chat(client, messages=with_image(image_url(280, 140)))).json()
        many = await chat(client, messages=with_image(image_url(28, 28), count=3))
        broken = await chat(client, messages=with_image("data:image/png;base64,AAAA"))
        info = (await client.get("/model_info")).json()
    shapes.chat_response(large)
    # 28-pixel cells: 1 (at least 4) for the small one, 10 x 5 for the large one.
    assert large["usage"]["prompt_tokens"] - small["usage"]["prompt_tokens"] == 50 - 4
    assert large["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "image_tokens": 50}
    assert many.status_code == 400
    assert many.json()["message"] == "Image count 3 exceeds limit 2 per request."
    assert broken.status_code == 400
    assert broken.json()["message"].startswith(
        "Error while loading data data:image/png;base64,AAAA: "
    )
    assert info["has_image_understanding"] is True
