"""What `make run` prints on how to call it: examples a user can paste as they are."""

from __future__ import annotations

import json
import re
from typing import Any

from switchyard.devstack.__main__ import banner
from switchyard.devstack.components import EMBEDDING_MODELS, demo_models

TEXT = banner("sy-key", ["http://127.0.0.1:8080"], [("sim-vllm", "http://127.0.0.1:1")])


def curls() -> list[tuple[str, dict[str, Any]]]:
    """Each `curl <url> ... -d '<json>'`: its URL's path and its body."""
    found = re.findall(r"curl http://127\.0\.0\.1:8080(\S+).*?-d '(.*?)'", TEXT, flags=re.DOTALL)
    return [(path, json.loads(body)) for path, body in found]


def curl_bodies() -> list[dict[str, Any]]:
    return [body for _, body in curls()]


def python_example() -> str:
    found = re.search(r"python - <<'EOF'\n(.*?)\n\s*EOF", TEXT, flags=re.DOTALL)
    assert found is not None
    return "\n".join(line.removeprefix("  ") for line in found.group(1).splitlines())


def test_the_curl_examples_are_json_for_served_models() -> None:
    bodies = curl_bodies()
    assert len(bodies) == 5
    models = {model.name for model in demo_models()}
    assert all(body["model"] in models for body in bodies)
    assert all(model in TEXT.splitlines()[1] for model in models)  # "models: ..." lists them


def test_one_curl_example_asks_an_embedding_model_for_short_vectors() -> None:
    (body,) = [b for p, b in curls() if p == "/v1/embeddings"]
    assert body["model"] in EMBEDDING_MODELS.values()
    assert body["dimensions"] >= 1
    assert all(isinstance(text, str) for text in body["input"])
    assert sorted(p for p, _ in curls()) == [
        *["/v1/chat/completions"] * 2,
        "/v1/embeddings",
        "/v1/messages",
        "/v1/responses",
    ]


def test_the_messages_example_authenticates_as_anthropic_clients_do() -> None:
    (body,) = [b for p, b in curls() if p == "/v1/messages"]
    assert body["max_tokens"] >= 1  # required by Anthropic's API
    assert '-H "x-api-key: sy-key"' in TEXT


def test_one_curl_example_calls_a_tool() -> None:
    (with_tools,) = [body for body in curl_bodies() if "tools" in body]
    (tool,) = with_tools["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["parameters"]["type"] == "object"


def test_the_python_example_compiles_and_uses_the_key_and_tools() -> None:
    code = python_example()
    compile(code, "<banner>", "exec")
    assert 'api_key="sy-key"' in code
    assert "tools=[" in code
    assert "reasoning_content" in code
    assert f'embeddings.create(model="{EMBEDDING_MODELS["vllm"]}"' in code
    assert "previous_response_id=first.id" in code
    assert 'Anthropic(base_url="http://127.0.0.1:8080", api_key="sy-key")' in code
