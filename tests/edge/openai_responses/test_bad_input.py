"""Bad Responses input is a 400 in OpenAI's shape, naming the parameter, and no engine sees
it; unknown, deleted or another tenant's responses are a 404 in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.edge.conftest import sim_stats
from tests.edge.openai_responses.conftest import MAX_BYTES
from tests.support.edge import Edge
from tests.support.stacks import Stack

pytestmark = pytest.mark.usefixtures("responses_quiet_after")

BASE = {"model": "demo-vllm", "input": "hi", "max_output_tokens": 20}
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (body fields, param, a fragment of the message)
    "unknown item type": (
        {"input": [{"type": "item_reference", "id": "msg_1"}]},
        "input[0].type",
        "'item_reference' are not supported",
    ),
    "an item with neither type nor role": ({"input": [{"content": "x"}]}, "input[0].type", "type"),
    "a file part": (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
        "input[0].content[0].type",
        "input_file",
    ),
    "an image in a system message": (
        {
            "input": [
                {"role": "system", "content": [{"type": "input_image", "image_url": "x"}]},
            ]
        },
        "input[0].content[0].type",
        "system message",
    ),
    "a function result without its call": (
        {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "18"}]},
        "input[0].call_id",
        "call_9",
    ),
    "web search": ({"tools": [{"type": "web_search"}]}, "tools[0].type", "built-in tool"),
    "file search": (
        {"tools": [TOOL, {"type": "file_search", "vector_store_ids": ["vs"]}]},
        "tools[1].type",
        "'file_search'",
    ),
    "computer use": ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type", "computer"),
    "a built-in tool choice": (
        {"tools": [TOOL], "tool_choice": {"type": "web_search_preview"}},
        "tool_choice.type",
        "web_search_preview",
    ),
    "a tool choice naming no tool": (
        {"tools": [TOOL], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice",
        "'nope'",
    ),
    "a tool schema that is no JSON schema": (
        {"tools": [{**TOOL, "parameters": {"type": 12}}]},
        "tools[0].parameters",
        "not a valid JSON Schema",
    ),
    "an unknown text format": ({"text": {"format": {"type": "xml"}}}, "text.format.type", "xml"),
    "a json_schema format without its name": (
        {"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        "text.format.name",
        "Field required",
    ),
    "a json_schema format that is no JSON schema": (
        {"text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": 12}}}},
        "text.format.schema",
        "not a valid JSON Schema",
    ),
    "an unknown previous response": (
        {"previous_response_id": "resp_nope"},
        "previous_response_id",
        "Previous response with id 'resp_nope' not found",
    ),
    "a parameter this server does not take": (
        {"conversation": "conv_1"},
        "conversation",
        "not supported",
    ),
    "a conversation over the store's limit": (
        {"input": "word " * (MAX_BYTES // 5 + 100)},
        "input",
        f"limit of {MAX_BYTES} bytes",
    ),
    "background without store": ({"background": True, "store": False}, "store", "store"),
    "a temperature out of range": ({"temperature": 3}, "temperature", "less than or equal"),
}


async def _requests_seen(stacks: dict[str, Stack]) -> int:
    return sum([(await sim_stats(s))["requests"] for s in stacks.values()])


async def test_bad_input_is_400_and_reaches_no_engine(
    responses_edge: Edge, feature_stacks: dict[str, Stack]
) -> None:
    seen = await _requests_seen(feature_stacks)
    async with httpx.AsyncClient(timeout=60) as client:
        for name, (fields, param, fragment) in CASES.items():
            response = await client.post(
                f"{responses_edge.url}/v1/responses",
                json={**BASE, **fields},
                headers=responses_edge.auth(),
            )
            assert response.status_code == 400, (name, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, name
            assert error["type"] == "invalid_request_error", name
            assert error["param"] == param, (name, error)
            assert fragment in error["message"], (name, error)
        good = await client.post(
            f"{responses_edge.url}/v1/responses", json=BASE, headers=responses_edge.auth()
        )
        assert good.status_code == 200, good.text
    assert await _requests_seen(feature_stacks) == seen + 1  # only the good one


async def test_stored_not_found_in_openais_shape(responses_edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=responses_edge.url, timeout=60) as client:
        auth = responses_edge.auth()
        for method, path in (
            ("GET", "/v1/responses/resp_nope"),
            ("DELETE", "/v1/responses/resp_nope"),
            ("GET", "/v1/responses/resp_nope/input_items"),
        ):
            response = await client.request(method, path, headers=auth)
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"] == "Response with id 'resp_nope' not found."
        unauthenticated = await client.get("/v1/responses/resp_nope")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["code"] == "invalid_api_key"


async def test_input_items_paging_params_are_checked(responses_edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=responses_edge.url, timeout=60) as client:
        auth = responses_edge.auth()
        created = await client.post("/v1/responses", json=BASE, headers=auth)
        assert created.status_code == 200, created.text
        path = f"/v1/responses/{created.json()['id']}/input_items"
        for query, param in (
            ({"limit": "0"}, "limit"),
            ({"limit": "101"}, "limit"),
            ({"limit": "x"}, "limit"),
            ({"order": "up"}, "order"),
            ({"after": "msg_nope"}, "after"),
        ):
            response = await client.get(path, params=query, headers=auth)
            assert response.status_code == 400, (query, response.text)
            assert response.json()["error"]["param"] == param
