"""The official `anthropic` SDK against a test edge."""

from __future__ import annotations

import anthropic

from tests.support.edge import Edge


def client(edge: Edge, key: str = "full") -> anthropic.AsyncAnthropic:
    """The SDK with the key as it sends it (`api_key`), without its own retries."""
    return anthropic.AsyncAnthropic(
        base_url=edge.url, api_key=edge.keys.get(key, key), max_retries=0
    )


def header_client(edge: Edge, key: str = "full") -> anthropic.AsyncAnthropic:
    """The SDK sending the key in Anthropic's own `x-api-key` header."""
    return anthropic.AsyncAnthropic(
        base_url=edge.url,
        api_key=None,
        default_headers={"x-api-key": edge.keys.get(key, key)},
        max_retries=0,
    )
