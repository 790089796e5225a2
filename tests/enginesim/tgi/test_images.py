"""Images in the simulated TGI's chat: read by a vision model, text to a text-only one."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from switchyard.enginesim import images
from tests.enginesim.tgi.conftest import asgi_client, make_app
from tests.enginesim.tgi.openapi import check


def data_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "green").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _messages(url: str | None) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe"}]
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": content}]


async def _chat(client: httpx.AsyncClient, url: str | None) -> httpx.Response:
    body = {"messages": _messages(url), "max_tokens": 4, "seed": 1}
    return await client.post("/v1/chat/completions", json=body)


@pytest.fixture
async def vision() -> Any:
    async with asgi_client(make_app("--sim-multimodal", "--payload-limit", "4000000")) as c:
        yield c


async def test_a_vision_model_counts_an_image_by_its_size(vision: httpx.AsyncClient) -> None:
    text = (await _chat(vision, None)).json()
    response = await _chat(vision, data_url(56, 84))
    assert response.status_code == 200, response.text
    check("ChatCompletion", response.json())
    added = response.json()["usage"]["prompt_tokens"] - text["usage"]["prompt_tokens"]
    assert added == images.image_tokens(56, 84) == 6
    bigger = (await _chat(vision, data_url(280, 280))).json()["usage"]["prompt_tokens"]
    assert bigger - text["usage"]["prompt_tokens"] == 100


async def test_a_text_only_model_reads_the_image_as_text(client: httpx.AsyncClient) -> None:
    # TGI has no error for it: the markdown `![](data:...)` is prompt text.
    url = data_url(2, 2)
    response = await _chat(client, url)
    assert response.status_code == 200, response.text
    templated = (await client.post("/chat_tokenize", json={"messages": _messages(url)})).json()[
        "templated_text"
    ]
    assert f"Describe![]({url})" in templated
    assert response.json()["usage"]["prompt_tokens"] > len(url) // 2


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("data:image/png;base64,!!!", "base64 encoding is invalid: "),
        ("data:image/png;base64," + base64.b64encode(b"hello").decode(), "invalid image: "),
        ("data:image/png,abc", "invalid image content: image/png,abc"),
        ("https://example.com/cat.png", "Could not fetch image: "),
    ],
)
async def test_an_unreadable_image_is_a_validation_error(
    vision: httpx.AsyncClient, url: str, error: str
) -> None:
    response = await _chat(vision, url)
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation"
    assert body["error"].startswith(f"Input validation error: {error}")


async def test_tokenize_spells_the_markdown_back_only_without_vision(
    client: httpx.AsyncClient, vision: httpx.AsyncClient
) -> None:
    inputs = f"See ![]({data_url(28, 28)}) now"
    text_only = (await client.post("/tokenize", json={"inputs": inputs})).json()
    assert "".join(t["text"] for t in text_only) == inputs
    read = (await vision.post("/tokenize", json={"inputs": inputs})).json()
    check("TokenizeResponse", read)
    assert "".join(t["text"] for t in read) == "See  now"
    assert sum(1 for t in read if t["text"] == "") == images.image_tokens(28, 28)
