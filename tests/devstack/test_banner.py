"""What `make run` prints on how to call it: examples a user can paste as they are."""

from __future__ import annotations

import json
import re
from typing import Any

from switchyard.devstack.__main__ import banner
from switchyard.devstack.components import ENGINES, served_name

TEXT = banner("sy-key", ["http://127.0.0.1:8080"], [("sim-vllm", "http://127.0.0.1:1")])


def curl_bodies() -> list[dict[str, Any]]:
    """The JSON after each `curl ... -d '`, up to its closing quote."""
    bodies = re.findall(r"-d '(.*?)'", TEXT, flags=re.DOTALL)
    return [json.loads(body) for body in bodies]


def python_example() -> str:
    found = re.search(r"python - <<'EOF'\n(.*?)\n\s*EOF", TEXT, flags=re.DOTALL)
    assert found is not None
    return "\n".join(line.removeprefix("  ") for line in found.group(1).splitlines())


def test_the_curl_examples_are_json_for_served_models() -> None:
    bodies = curl_bodies()
    assert len(bodies) == 2
    models = {served_name(engine) for engine in ENGINES}
    assert all(body["model"] in models for body in bodies)


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
