"""OpenAI chat and completion bodies → the contract's request, and the cheap checks on the way
(no processes: the translation is pure)."""

from __future__ import annotations

import base64
import pickle
from typing import Any

import pytest

from switchyard.edge.checks import InvalidPart, request_parts
from switchyard.edge.convert import (
    IMAGE_TOKENS_ESTIMATE,
    Canonical,
    Rules,
    chat_request,
    completion_request,
    estimate_prompt_tokens,
)
from switchyard.edge.errors import OpenAIError
from switchyard.edge.images import ImageRules, decoded_size
from switchyard.edge.schemas import ChatCompletionRequest, CompletionRequest
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import SchemaLimits

RULES = Rules(
    SchemaLimits(),
    max_n=4,
    images=ImageRules(
        max_images=2,
        max_image_bytes=1024,
        url_hosts=frozenset({"images.example.com", "127.0.0.1", "169.254.169.254", "::1"}),
    ),
)
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
USER = {"role": "user", "content": "Weather in Paris?"}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * 60).decode()


def chat(**body: Any) -> Canonical:
    parsed = ChatCompletionRequest.model_validate({"model": "m", "messages": [USER], **body})
    return chat_request(parsed, "route", "rid", RULES)


def refused(**body: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        chat(**body)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


def test_tools_and_tool_choice_are_carried_typed() -> None:
    request = chat(tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False).request
    weather, time = request.tools
    assert (weather.name, weather.description, weather.strict) == (
        "get_weather",
        "The weather in a city",
        True,
    )
    assert weather.parameters == (
        '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'
    )
    assert (time.name, time.parameters, time.strict) == ("get_time", "", False)
    assert request.tool_choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED
    assert request.HasField("parallel_tool_calls")
    assert request.parallel_tool_calls is False
    named = chat(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert named.request.tool_choice.function == "get_weather"
    for mode, value in (("auto", pb.TOOL_CHOICE_MODE_AUTO), ("none", pb.TOOL_CHOICE_MODE_NONE)):
        assert chat(tools=[WEATHER], tool_choice=mode).request.tool_choice.mode == value
    unset = chat(tools=[WEATHER]).request
    assert not unset.HasField("tool_choice")
    assert not unset.HasField("parallel_tool_calls")


def test_tool_schemas_are_listed_for_the_metaschema_check() -> None:
    canonical = chat(tools=[WEATHER, TIME])
    assert [(s.param, s.schema) for s in canonical.schemas] == [
        ("tools[0].function.parameters", WEATHER["function"]["parameters"])
    ]
    assert canonical.schemas[0].text.decode() == canonical.request.tools[0].parameters


def test_tool_definitions_that_cannot_work_are_400() -> None:
    duplicate = refused(tools=[WEATHER, WEATHER])
    assert duplicate.param == "tools[1].function.name"
    assert "already defined" in duplicate.message
    unknown = refused(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
    assert unknown.param == "tool_choice"
    assert "'x'" in unknown.message
    assert refused(tool_choice="auto").param == "tool_choice"
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    tool = {"type": "function", "function": {"name": "f", "parameters": deep}}
    too_deep = refused(tools=[tool])
    assert (too_deep.param, too_deep.code) == ("tools[0].function.parameters", "schema_too_large")


def test_all_tools_together_are_bounded_too() -> None:
    # Each tool is within the limits; all of them together pass the node limit.
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(200)}}
    tools = [
        {"type": "function", "function": {"name": f"f{i}", "parameters": wide}} for i in range(12)
    ]
    error = refused(tools=tools)
    assert (error.param, error.code) == ("tools", "schema_too_large")


def test_an_agent_loop_history_is_carried() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    messages = [
        {"role": "developer", "content": "Be brief."},
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
    ]
    request = chat(messages=messages, tools=[WEATHER]).request
    system, user, assistant, tool = request.chat.messages
    assert (system.role, system.content) == ("system", "Be brief.")
    assert (user.role, user.content) == ("user", "Weather in Paris?")
    assert assistant.content == ""
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}')
    ]
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "sunny")


def test_a_tool_message_without_its_call_is_400() -> None:
    error = refused(messages=[USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}])
    assert error.param == "messages[1].tool_call_id"
    assert "call_9" in error.message
    # A call made only later does not count either.
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    later = [
        USER,
        {"role": "tool", "tool_call_id": "call_9", "content": "x"},
        {"role": "assistant", "tool_calls": [call]},
    ]
    assert refused(messages=later).param == "messages[1].tool_call_id"


def test_logprobs_and_n() -> None:
    request = chat(logprobs=True, top_logprobs=5, n=3).request
    assert (request.logprobs.top_logprobs, request.n) == (5, 3)
    assert chat(logprobs=True).request.HasField("logprobs")
    assert not chat(logprobs=False).request.HasField("logprobs")
    assert chat().request.n == 0  # one choice
    assert refused(top_logprobs=2).param == "top_logprobs"
    too_many = refused(n=5)
    assert (too_many.param, too_many.code) == ("n", "invalid_value")
    assert "at most 4" in too_many.message


def test_structured_outputs_extra() -> None:
    choice = chat(structured_outputs={"choice": ["yes", "no"]}).request.structured_output
    assert list(choice.choice.choices) == ["yes", "no"]
    assert chat(structured_outputs={"regex": "[0-9]+"}).request.structured_output.regex == "[0-9]+"
    both = refused(structured_outputs={"regex": "a"}, response_format={"type": "json_object"})
    assert both.param == "structured_outputs"


def _image_message(*urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": "low"}} for u in urls]
    return {"role": "user", "content": parts}


def test_images_are_parts_in_order() -> None:
    canonical = chat(messages=[_image_message(PNG, "https://images.example.com/a.png")])
    (message,) = canonical.request.chat.messages
    text, inline, remote = message.parts
    assert text.text == "What is this?"
    assert (inline.image.url, inline.image.detail) == (PNG, "low")
    assert remote.image.url == "https://images.example.com/a.png"
    assert message.content == ""
    assert canonical.images == [("messages[0].content[1].image_url.url", PNG)]
    assert canonical.image_count == 2


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64," + "A" * 1400, "image_too_large"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "invalid_image_url"),
        ("data:text/plain;base64,aGk=", "invalid_image_url"),
        ("data:image/png,rawbytes", "invalid_image_url"),
        ("https://elsewhere.example.com/a.png", "image_url_not_allowed"),
        ("http://127.0.0.1/a.png", "image_url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "image_url_not_allowed"),
        ("http://[::1]:8080/a.png", "image_url_not_allowed"),
        ("http://10.0.0.1/a.png", "image_url_not_allowed"),
        ("http://[fe80::1]/a.png", "image_url_not_allowed"),
        ("http://[fd00:ec2::254]/a.png", "image_url_not_allowed"),
        ("http://0.0.0.0/a.png", "image_url_not_allowed"),
        ("http://[::ffff:169.254.169.254]/a.png", "image_url_not_allowed"),
        ("http://images.example.com@169.254.169.254/a.png", "invalid_image_url"),
        ("http://images.example.com\\@10.0.0.1/a.png", "invalid_image_url"),
        ("ftp://images.example.com/a.png", "invalid_image_url"),
        ("file:///etc/passwd", "invalid_image_url"),
        ("https://images.example.com:99999/a.png", "invalid_image_url"),
    ],
)
def test_images_that_may_not_reach_an_engine_are_400(url: str, code: str) -> None:
    error = refused(messages=[_image_message(url)])
    assert (error.param, error.code) == ("messages[0].content[1].image_url.url", code)


def test_listed_ip_literals_outside_the_cluster_pass() -> None:
    rules = Rules(SchemaLimits(), 1, ImageRules(8, 1024, frozenset({"93.184.215.14"})))
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [_image_message("https://93.184.215.14/a.png")]}
    )
    assert chat_request(body, "r", "id", rules).image_count == 1


def test_images_are_counted() -> None:
    error = refused(messages=[_image_message(PNG, PNG), _image_message(PNG)])
    assert (error.param, error.code) == ("messages[1].content[1].image_url.url", "too_many_images")


def test_decoded_size_is_exact() -> None:
    head = "data:image/png;base64,"
    for size in range(0, 12):
        encoded = base64.b64encode(b"x" * size).decode()
        assert decoded_size(encoded) == size
        assert decoded_size(head + encoded, len(head)) == size


def test_the_pool_checks_schemas_then_images() -> None:
    request_parts([("p", {"type": "object"})], [("img", PNG)])  # valid: no error
    with pytest.raises(InvalidPart) as bad_schema:
        request_parts([("tools[0].function.parameters", {"type": 12})], [])
    assert (bad_schema.value.param, bad_schema.value.kind) == (
        "tools[0].function.parameters",
        "json_schema",
    )
    assert "not a valid JSON Schema" in bad_schema.value.message
    with pytest.raises(InvalidPart) as bad_image:
        request_parts([], [("img", "data:image/png;base64,@@@notbase64")])
    assert (bad_image.value.param, bad_image.value.kind) == ("img", "image")
    # It crosses back from a worker process whole.
    crossed = pickle.loads(pickle.dumps(bad_image.value))
    assert (crossed.param, crossed.kind, crossed.message) == (
        "img",
        "image",
        bad_image.value.message,
    )


def test_completions_logprobs_and_n() -> None:
    body = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 3, "n": 2})
    request = completion_request(body, "r", "id", RULES).request
    assert (request.logprobs.top_logprobs, request.n) == (3, 2)
    plain = CompletionRequest.model_validate({"model": "m", "prompt": "x"})
    assert not completion_request(plain, "r", "id", RULES).request.HasField("logprobs")


def test_the_estimate_counts_tools_and_images() -> None:
    plain = estimate_prompt_tokens(chat().request)
    assert estimate_prompt_tokens(chat(tools=[WEATHER]).request) > plain
    with_image = estimate_prompt_tokens(chat(messages=[_image_message(PNG)]).request)
    assert with_image >= IMAGE_TOKENS_ESTIMATE
