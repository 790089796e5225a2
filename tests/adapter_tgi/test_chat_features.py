"""The TGI translation of tools, logprobs, images and n, checked against literal TGI payloads
(shapes from `router/src/lib.rs` and `chat.rs` at 3.3.6-dev0)."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from switchyard.adapter.translation import Delta
from switchyard.adapter_tgi.translation import IMAGE_PROBE, TgiTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.engine_http import RecordingEngine

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def chat(
    *,
    tools: list[pb.Tool] | None = None,
    tool_choice: pb.ToolChoice | None = None,
    logprobs: pb.LogprobsOptions | None = None,
) -> pb.GenerateRequest:
    request = generate_request("m", messages=[("user", "Weather in Paris?")])
    request.tools.extend(tools or ())
    if tool_choice is not None:
        request.tool_choice.CopyFrom(tool_choice)
    if logprobs is not None:
        request.logprobs.CopyFrom(logprobs)
    return request


def weather_tool(**more: Any) -> pb.Tool:
    return pb.Tool(name="get_weather", parameters=orjson.dumps(WEATHER).decode(), **more)


def _refused(request: pb.GenerateRequest, param: str) -> InferenceError:
    with pytest.raises(InferenceError) as caught:
        TgiTranslation("m").request(request, stream=False)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.UNSUPPORTED_FEATURE
    assert error.metadata.get("param") == param
    return error


def test_what_the_translation_carries() -> None:
    assert TgiTranslation.features == {"tools", "images", "logprobs", "n"}  # no reasoning parser
    assert TgiTranslation.native_n is False  # TGI reads `n` and ignores it


# Tools.


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (None, None),  # TGI's default is auto
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), "auto"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), "required"),
        (
            pb.ToolChoice(function="get_weather"),
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tools_and_tool_choice(choice: pb.ToolChoice | None, sent: Any) -> None:
    request = chat(tools=[weather_tool(description="Now.", strict=True)], tool_choice=choice)
    body = TgiTranslation("m").request(request, stream=False).body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "arguments": WEATHER, "description": "Now."},
        }
    ]
    assert body.get("tool_choice") == sent
    assert "parallel_tool_calls" not in body  # TGI has none: it writes one call at most


def test_tool_choice_none_sends_no_tools_so_a_response_format_still_works() -> None:
    request = chat(tools=[weather_tool()], tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE))
    request.structured_output.regex = "a+"
    body = TgiTranslation("m").request(request, stream=False).body
    assert "tools" not in body
    assert "tool_choice" not in body
    assert body["response_format"] == {"type": "regex", "value": "a+"}


def test_tools_with_a_response_format_are_refused() -> None:
    request = chat(tools=[weather_tool()])
    request.structured_output.regex = "a+"
    _refused(request, "tools")


def test_a_tool_without_parameters_gets_an_empty_object() -> None:
    body = TgiTranslation("m").request(chat(tools=[pb.Tool(name="ping")]), stream=False).body
    assert body["tools"][0]["function"]["arguments"] == {"type": "object", "properties": {}}


def _history(content: str = "") -> pb.GenerateRequest:
    request = generate_request("m", messages=[("user", "Weather in Paris?")])
    assistant = request.chat.messages.add(role="assistant", content=content)
    assistant.tool_calls.add(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    request.chat.messages.add(role="tool", content="Sunny", tool_call_id="call_1")
    request.tools.append(weather_tool())
    return request


def test_an_assistants_calls_go_without_content() -> None:
    body = TgiTranslation("m").request(_history(), stream=False).body
    assert body["messages"][1] == {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ],
    }  # fmt: skip
    assert body["messages"][2] == {"role": "tool", "content": "Sunny", "tool_call_id": "call_1"}


def test_an_assistant_message_with_content_and_calls_is_refused() -> None:
    _refused(_history("Let me look."), "messages")


_CALL_BODY = {
    "object": "chat.completion", "id": "", "created": 1, "model": "m",
    "system_fingerprint": "3.3.6-dev0-native",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "0", "type": "function",
                        "function": {"description": None, "name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
}  # fmt: skip


def test_a_unary_call_gets_its_own_id_and_finish_reason() -> None:
    t = TgiTranslation("m")
    first = t.completion(chat(tools=[weather_tool()]), _CALL_BODY)
    second = t.completion(chat(tools=[weather_tool()]), _CALL_BODY)
    [choice] = first.choices
    [call] = choice.tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    assert call.id.startswith("call_")
    assert call.id != second.choices[0].tool_calls[0].id  # TGI's "0" is no id
    assert choice.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert choice.text == ""
    assert (first.prompt_tokens, first.completion_tokens) == (40, 12)


def _chunk(
    delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "id": "", "choices": [choice], "usage": None}


def _tool_delta(arguments: str, name: str | None = None) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    call = {"index": 0, "id": "0", "type": "function", "function": function}
    return {"role": "assistant", "tool_calls": [call]}


_USAGE_CHUNK = {
    "object": "chat.completion.chunk", "id": "", "choices": [],
    "usage": {"prompt_tokens": 40, "completion_tokens": 14, "total_tokens": 54},
}  # fmt: skip


def test_a_streamed_call_becomes_the_contracts_deltas_and_ends_with_the_usage() -> None:
    parser = TgiTranslation("m").stream_parser(chat(tools=[weather_tool()]))
    pieces = [
        ("{", "get_weather"),
        (' "', None),
        ("city", None),
        ('": "', None),
        ("Paris", None),
        ('"', None),
        ("", None),
    ]
    deltas = [parser.feed("", _chunk(_tool_delta(a, n))) for a, n in pieces]  # fmt: skip
    assert all(d is not None for d in deltas)
    calls = [c for d in deltas if d is not None for c in d.tool_calls]
    first, *rest = calls
    assert first.id.startswith("call_")
    assert (first.name, first.arguments_delta) == ("get_weather", "{")
    assert all(c.id == "" and c.name == "" for c in rest)  # id and name on the first only
    assert "".join(c.arguments_delta for c in calls) == '{ "city": "Paris"'
    assert all(d.finish_reason == pb.FINISH_REASON_UNSPECIFIED for d in deltas if d)
    # No chunk said why the call ended (TGI sends nothing after the JSON): the usage does.
    end = parser.feed("", _USAGE_CHUNK)
    assert end == Delta(
        finish_reason=pb.FINISH_REASON_TOOL_CALLS, prompt_tokens=40, completion_tokens=14
    )


def test_a_text_stream_ends_with_its_own_finish_reason_not_the_usage() -> None:
    parser = TgiTranslation("m").stream_parser(chat())
    parser.feed("", _chunk({"role": "assistant", "content": "Hi"}))
    last = parser.feed("", _chunk({"role": "assistant", "content": ""}, "stop"))
    assert last is not None
    assert last.finish_reason == pb.FINISH_REASON_STOP
    end = parser.feed("", _USAGE_CHUNK)
    assert end is not None
    assert end.finish_reason == pb.FINISH_REASON_UNSPECIFIED


# Logprobs.


def test_logprobs_on_chat_and_native() -> None:
    t = TgiTranslation("m")
    request = chat(logprobs=pb.LogprobsOptions(top_logprobs=3))
    body = t.request(request, stream=True).body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    chosen_only = t.request(chat(logprobs=pb.LogprobsOptions()), stream=False).body
    assert chosen_only["logprobs"] is True
    assert "top_logprobs" not in chosen_only
    native = generate_request("m", prompt="Hi")
    native.logprobs.top_logprobs = 2
    assert t.request(native, stream=False).body["parameters"]["top_n_tokens"] == 2
    assert "logprobs" not in t.request(chat(), stream=False).body


def _entry(token: str, logprob: float, *tops: tuple[str, float]) -> dict[str, Any]:
    top = [{"token": a, "logprob": b} for a, b in tops]
    return {"token": token, "logprob": logprob, "top_logprobs": top}


def test_unary_chat_logprobs_without_eos() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hé"},
                "logprobs": {"content": [_entry("Hé", -0.5, ("Hé", -0.5), ("Ho", -1.5)), _entry("</s>", -0.1)]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }  # fmt: skip
    request = chat(logprobs=pb.LogprobsOptions(top_logprobs=2))
    [choice] = TgiTranslation("m").completion(request, body).choices
    [entry] = choice.logprobs  # EOS is no text: TGI lists it, OpenAI does not
    assert (entry.token, entry.bytes) == ("Hé", "Hé".encode())
    assert entry.logprob == pytest.approx(-0.5)
    assert [(t.token, t.logprob) for t in entry.top_logprobs] == [("Hé", -0.5), ("Ho", -1.5)]
    assert all(t.bytes == t.token.encode() for t in entry.top_logprobs)


def test_streamed_chat_logprobs_without_eos() -> None:
    parser = TgiTranslation("m").stream_parser(chat(logprobs=pb.LogprobsOptions(top_logprobs=1)))
    token = parser.feed(
        "", _chunk({"role": "assistant", "content": "Hi"}, None, {"content": [_entry("Hi", -0.2, ("Hi", -0.2))]})
    )  # fmt: skip
    assert token is not None
    [entry] = token.logprobs
    assert (entry.token, len(entry.top_logprobs)) == ("Hi", 1)
    assert entry.logprob == pytest.approx(-0.2)
    eos = parser.feed(
        "", _chunk({"role": "assistant", "content": ""}, "stop", {"content": [_entry("</s>", -0.1)]})
    )  # fmt: skip
    assert eos is not None
    assert eos.logprobs == ()


def test_native_logprobs_from_details_and_stream_events() -> None:
    t = TgiTranslation("m")
    request = generate_request("m", prompt="Hi")
    request.logprobs.top_logprobs = 1
    tokens = [
        {"id": 5, "text": " yes", "logprob": -0.3, "special": False},
        {"id": 2, "text": "</s>", "logprob": -0.01, "special": True},
    ]
    tops = [[{"id": 5, "text": " yes", "logprob": -0.3, "special": False}], [tokens[1]]]
    details = {
        "finish_reason": "eos_token",
        "generated_tokens": 2,
        "tokens": tokens,
        "top_tokens": tops,
    }
    done = t.completion(
        request, {"generated_text": " yes", "details": details}, {"x-prompt-tokens": "1"}
    )
    [entry] = done.choices[0].logprobs
    assert (entry.token, [a.token for a in entry.top_logprobs]) == (" yes", [" yes"])
    assert entry.logprob == pytest.approx(-0.3)
    parser = t.stream_parser(request)
    event = {
        "index": 1,
        "token": tokens[0],
        "top_tokens": tops[0],
        "generated_text": None,
        "details": None,
    }
    delta = parser.feed("", event)
    assert delta is not None
    assert [e.token for e in delta.logprobs] == [" yes"]  # fmt: skip


# Images.


def _with_image() -> pb.GenerateRequest:
    request = generate_request("m")
    message = request.chat.messages.add(role="user")
    message.parts.add(text="What is this?")
    message.parts.add(image=pb.Image(url="data:image/png;base64,AAAA", detail="low"))
    return request


async def test_images_reach_a_vision_model_and_a_text_only_one_refuses_them() -> None:
    tokens_of = {
        "text": [
            {"id": i, "text": c, "start": i, "stop": i + 1} for i, c in enumerate(IMAGE_PROBE)
        ],
        "vision": [{"id": 9, "text": "", "start": 0, "stop": 0}],
    }
    for kind, tokens in tokens_of.items():
        t = TgiTranslation("m")
        answers = {("GET", "/info"): {"max_total_tokens": 4096}, ("POST", "/tokenize"): tokens}
        assert await t.max_model_len(RecordingEngine(answers)) == 4096
        if kind == "text":
            assert t.reads_images is False
            _refused_by(t, _with_image())
            continue
        assert t.reads_images is True
        body = t.request(_with_image(), stream=False).body
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]  # fmt: skip


def _refused_by(t: TgiTranslation, request: pb.GenerateRequest) -> None:
    with pytest.raises(InferenceError) as caught:
        t.request(request, stream=False)
    assert caught.value.reason == pb.UNSUPPORTED_FEATURE
    assert caught.value.metadata.get("param") == "messages"


def test_a_named_functions_call_finishes_as_stop() -> None:
    # OpenAI's reason (and vLLM's) for a call it was told to make.
    request = chat(tools=[weather_tool()], tool_choice=pb.ToolChoice(function="get_weather"))
    t = TgiTranslation("m")
    assert t.completion(request, _CALL_BODY).choices[0].finish_reason == pb.FINISH_REASON_STOP
    parser = t.stream_parser(request)
    parser.feed("", _chunk(_tool_delta("{", "get_weather")))
    end = parser.feed("", _USAGE_CHUNK)
    assert end is not None
    assert end.finish_reason == pb.FINISH_REASON_STOP
