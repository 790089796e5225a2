"""Engine-independent request checks: what they reject, with which message and param."""

from __future__ import annotations

import grpc
import orjson
import pytest

from switchyard.adapter.validation import validate
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

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
