"""Engine-independent request checks: what they reject, with which message and param."""

from __future__ import annotations

import grpc
import orjson
import pytest

from switchyard.adapter.validation import validate, validate_embed
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.embeddings import embed_request

MODEL = "demo"


def _request(**sampling: object) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=MODEL, prompt="hello")
    for name, value in sampling.items():
        setattr(request.sampling, name, value)
    return request


def _reject(request: pb.GenerateRequest) -> InferenceError:
    with pytest.raises(InferenceError) as caught:
        validate(request, MODEL)
    return caught.value


def test_a_plain_request_passes() -> None:
    validate(_request(max_tokens=16, temperature=0.7, top_p=0.9, top_k=40), MODEL)


def test_missing_model() -> None:
    error = _reject(pb.GenerateRequest(prompt="x"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["param"] == "model"


def test_other_model_is_not_found() -> None:
    error = _reject(pb.GenerateRequest(model="other", prompt="x"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == pb.MODEL_NOT_FOUND


def test_missing_or_empty_input() -> None:
    assert "prompt or chat" in _reject(pb.GenerateRequest(model=MODEL)).message
    assert (
        _reject(pb.GenerateRequest(model=MODEL, chat=pb.ChatInput())).metadata["param"]
        == "messages"
    )


def test_unknown_role() -> None:
    request = pb.GenerateRequest(model=MODEL)
    request.chat.messages.add(role="wizard", content="hi")
    error = _reject(request)
    assert "messages[0].role" in error.message
    assert "wizard" in error.message


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": float("inf")}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_out_of_range_sampling(sampling: dict[str, object], param: str) -> None:
    error = _reject(_request(**sampling))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["param"] == param
    assert param in error.message


def test_negative_max_tokens_message_names_the_value() -> None:
    assert _reject(_request(max_tokens=-5)).message == "max_tokens must be at least 1, got -5"


def test_stop_strings() -> None:
    request = _request()
    request.sampling.stop.extend(["a"] * 5)
    assert _reject(request).metadata["param"] == "stop"
    request = _request()
    request.sampling.stop.append("")
    assert "empty" in _reject(request).message


def _constrained(**kind: object) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=MODEL, prompt="x")
    for name, value in kind.items():
        if name == "choice":
            request.structured_output.choice.choices.extend(value)  # type: ignore[arg-type]
        elif name == "json_object":
            request.structured_output.json_object.SetInParent()
        else:
            setattr(request.structured_output, name, value)
    return request


def test_valid_constraints_pass() -> None:
    validate(_constrained(json_schema='{"type": "object"}'), MODEL)
    validate(_constrained(json_object=True), MODEL)
    validate(_constrained(regex=r"\d{3}"), MODEL)
    validate(_constrained(choice=["yes", "no"]), MODEL)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ({"json_schema": "{not json"}, "not valid JSON"),
        ({"json_schema": "[1, 2]"}, "must be a JSON object"),
        ({"json_schema": '{"type": "strange"}'}, "not a valid JSON Schema"),
        ({"json_schema": '{"properties": {"a": {"minLength": -1}}}'}, "properties/a/minLength"),
        ({"regex": "("}, "does not compile"),
        ({"choice": []}, "at least one"),
    ],
)
def test_invalid_constraints(kind: dict[str, object], fragment: str) -> None:
    error = _reject(_constrained(**kind))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.message


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {f"p{i}": {} for i in range(1001)}}, "1000 properties"),
        ({"anyOf": [{} for _ in range(2001)]}, "2000 objects and arrays"),
        ({"description": "x" * (129 * 1024)}, "131072 bytes"),
    ],
    ids=["properties", "nodes", "bytes"],
)
def test_schemas_past_the_contract_s_limits_are_rejected(
    schema: dict[str, object], fragment: str
) -> None:
    error = _reject(_constrained(json_schema=orjson.dumps(schema).decode()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["param"] == "json_schema"
    assert fragment in error.message


def test_a_constraint_kind_from_a_newer_contract_is_rejected_not_dropped() -> None:
    # Field 99 inside StructuredOutput: a kind this contract version does not know.
    unknown_field = bytes([(99 << 3 | 2) & 0x7F | 0x80, (99 << 3 | 2) >> 7, 1, 0x41])
    so = pb.StructuredOutput.FromString(unknown_field)
    request = pb.GenerateRequest(model=MODEL, prompt="x", structured_output=so)
    assert request.HasField("structured_output")
    error = _reject(request)
    assert error.reason == pb.UNSUPPORTED_CONSTRAINT


# Chat features: tools, tool results, images, n, logprobs, and the engine's feature gate

WEATHER = orjson.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
).decode()


def _chat(*roles: str) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=MODEL)
    for role in roles or ("user",):
        request.chat.messages.add(role=role, content="Weather in Oslo?")
    return request


def _with_tool(
    request: pb.GenerateRequest, name: str = "weather", parameters: str = WEATHER
) -> pb.GenerateRequest:
    request.tools.add(name=name, parameters=parameters)
    return request


def _param_of(request: pb.GenerateRequest) -> str:
    error = _reject(request)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
    return error.metadata["param"]


def _agent_loop(call_id: str = "call_1", answered: str = "call_1") -> pb.GenerateRequest:
    request = _with_tool(_chat("user"))
    assistant = request.chat.messages.add(role="assistant")
    assistant.tool_calls.add(id=call_id, name="weather", arguments='{"city": "Oslo"}')
    request.chat.messages.add(role="tool", content="12 C", tool_call_id=answered)
    return request


def test_valid_chat_features_pass() -> None:
    request = _agent_loop()
    request.tools.add(name="time_now")  # no parameters
    request.tool_choice.function = "time_now"
    request.parallel_tool_calls = False
    request.n = 8
    request.logprobs.top_logprobs = 20
    request.chat.messages[0].content = ""
    request.chat.messages[0].parts.add(text="What is this?")
    request.chat.messages[0].parts.add(image=pb.Image(url="data:image/png;base64,AAAA"))
    validate(request, MODEL)


@pytest.mark.parametrize(
    ("name", "parameters", "param"),
    [
        ("", WEATHER, "tools[0].function.name"),
        ("has space", WEATHER, "tools[0].function.name"),
        ("x" * 65, WEATHER, "tools[0].function.name"),
        ("weather", "{not json", "tools[0].function.parameters"),
        ("weather", '{"type": "object", "properties": 3}', "tools[0].function.parameters"),
        ("weather", '{"type": "string"}', "tools[0].function.parameters"),
        ("weather", "[1]", "tools[0].function.parameters"),
    ],
)
def test_bad_tools(name: str, parameters: str, param: str) -> None:
    assert _param_of(_with_tool(_chat(), name, parameters)) == param


def test_tool_names_are_unique() -> None:
    request = _with_tool(_with_tool(_chat()))
    assert _param_of(request) == "tools[1].function.name"


def test_tool_choice_must_name_a_declared_tool_and_needs_tools() -> None:
    named = _with_tool(_chat())
    named.tool_choice.function = "forecast"
    assert "'forecast'" in _reject(named).message
    assert _param_of(named) == "tool_choice"
    required = _chat()
    required.tool_choice.mode = pb.TOOL_CHOICE_MODE_REQUIRED
    assert _param_of(required) == "tool_choice"
    none = _chat()
    none.tool_choice.mode = pb.TOOL_CHOICE_MODE_NONE
    validate(none, MODEL)  # nothing to call, nothing asked


def test_tools_need_a_chat() -> None:
    prompt = _with_tool(pb.GenerateRequest(model=MODEL, prompt="hello"))
    assert _param_of(prompt) == "tools"


@pytest.mark.parametrize(
    ("call_id", "answered", "param"),
    [
        ("call_1", "call_2", "messages[2].tool_call_id"),  # no such call
        ("call_1", "", "messages[2].tool_call_id"),  # a tool message answering nothing
        ("", "", "messages[1].tool_calls[0]"),  # a call without an id
    ],
)
def test_tool_results_answer_an_earlier_call(call_id: str, answered: str, param: str) -> None:
    assert _param_of(_agent_loop(call_id, answered)) == param


def test_a_tool_result_before_its_call_is_refused() -> None:
    request = _agent_loop()
    request.chat.messages[1].CopyFrom(
        pb.ChatMessage(role="tool", content="12 C", tool_call_id="call_1")
    )
    request.chat.messages[2].CopyFrom(request.chat.messages[1])
    assert _param_of(request) == "messages[1].tool_call_id"


def test_only_assistants_call_and_only_tools_answer() -> None:
    user_calls = _chat()
    user_calls.chat.messages[0].tool_calls.add(id="c", name="weather")
    assert _param_of(user_calls) == "messages[0].tool_calls"
    user_answers = _chat()
    user_answers.chat.messages[0].tool_call_id = "c"
    assert _param_of(user_answers) == "messages[0].tool_call_id"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/x.png", "", "HTTP//x"])
def test_images_are_data_or_http_urls(url: str) -> None:
    request = _chat()
    request.chat.messages[0].content = ""
    request.chat.messages[0].parts.add(image=pb.Image(url=url))
    assert _param_of(request) == "messages[0].content[0].image_url.url"


def test_content_and_parts_together_are_refused() -> None:
    request = _chat()
    request.chat.messages[0].parts.add(text="twice")
    assert _param_of(request) == "messages[0].content"


def test_n_and_top_logprobs_have_limits() -> None:
    many = _chat()
    many.n = 9
    assert _param_of(many) == "n"
    with pytest.raises(InferenceError):
        validate(many, MODEL, max_n=8)
    validate(many, MODEL, max_n=9)
    top = _chat()
    top.logprobs.top_logprobs = 21
    assert _param_of(top) == "top_logprobs"


@pytest.mark.parametrize(
    ("feature", "param"),
    [("tools", "tools"), ("images", "messages"), ("logprobs", "logprobs"), ("n", "n")],
)
def test_a_feature_the_engine_s_translation_lacks_is_refused_by_name(
    feature: str, param: str
) -> None:
    request = _chat()
    if feature == "tools":
        _with_tool(request)
    elif feature == "images":
        request.chat.messages[0].content = ""
        request.chat.messages[0].parts.add(image=pb.Image(url="data:image/png;base64,AAAA"))
    elif feature == "logprobs":
        request.logprobs.SetInParent()
    else:
        request.n = 2
    others = frozenset({"tools", "images", "logprobs", "n"} - {feature})
    with pytest.raises(InferenceError) as caught:
        validate(request, MODEL, engine="tgi", features=others)
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert error.metadata["param"] == param
    assert feature in error.message
    assert "tgi" in error.message
    validate(request, MODEL, engine="tgi", features=others | {feature})


def test_an_embed_request_of_texts_or_of_token_ids_passes() -> None:
    validate_embed(embed_request(MODEL, "a", "", dimensions=1), MODEL)  # "": the engine's call
    validate_embed(embed_request(MODEL, [1, 2], [0]), MODEL)


@pytest.mark.parametrize(
    ("request_", "param", "words"),
    [
        (embed_request(""), "model", "model is required"),
        (embed_request(MODEL), "input", "at least one input"),
        (pb.EmbedRequest(model=MODEL, inputs=[pb.EmbedInput()]), "input", "neither text"),
        (embed_request(MODEL, "a", []), "input", "empty list of token ids"),
        (embed_request(MODEL, "a", [1]), "input", "all texts or all token ids"),
        (embed_request(MODEL, "a", dimensions=0), "dimensions", "at least 1"),
    ],
    ids=["no-model", "no-input", "no-kind", "empty-tokens", "mixed", "zero-dimensions"],
)
def test_embed_requests_no_engine_should_see(
    request_: pb.EmbedRequest, param: str, words: str
) -> None:
    with pytest.raises(InferenceError) as caught:
        validate_embed(request_, MODEL)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.metadata["param"] == param
    assert words in caught.value.message


def test_an_embed_request_for_another_model_is_not_found() -> None:
    with pytest.raises(InferenceError) as caught:
        validate_embed(embed_request("other", "a"), MODEL)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
