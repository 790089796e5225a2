"""The agent-loop rule, tool arguments that conform to their schemas, the Hermes format."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.enginesim import tokenizer
from switchyard.enginesim.structured import ConstraintError
from switchyard.enginesim.tools import Call, Named, Tool, ToolChoice, arguments, calls, hermes, plan

WEATHER = Tool(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", {"type": "object", "properties": {"zone": {"type": "string"}}})
SEARCH = Tool("search")
TOOLS = (WEATHER, TIME, SEARCH)


@pytest.mark.parametrize(
    ("choice", "last_role", "user_text", "parallel", "expected"),
    [
        ("none", "user", "get_weather please", True, ()),
        ("auto", "user", "anything", True, (WEATHER,)),  # none named: the first tool
        ("auto", "tool", "get_weather", True, ()),  # after a tool result: text
        ("auto", "assistant", "get_weather", True, ()),
        ("required", "tool", "anything", True, (WEATHER,)),
        ("required", "user", "search then get_time", True, (TIME, SEARCH)),  # order of `tools`
        ("required", "user", "search then get_time", False, (TIME,)),
        ("auto", "user", "get_time and get_weather", True, (WEATHER, TIME)),
        (Named("search"), "tool", "get_weather", True, (SEARCH,)),
    ],
)
def test_the_agent_loop_rule(
    choice: ToolChoice, last_role: str, user_text: str, parallel: bool, expected: tuple[Tool, ...]
) -> None:
    got = plan(TOOLS, choice, last_role=last_role, user_text=user_text, parallel=parallel)
    assert got == expected


def test_no_tools_means_text() -> None:
    assert plan((), "required", last_role="user", user_text="x") == ()


def test_calls_are_seeded() -> None:
    first = calls(TOOLS, random.Random(7))
    assert first == calls(TOOLS, random.Random(7))
    assert [c.name for c in first] == ["get_weather", "get_time", "search"]
    assert any(calls(TOOLS, random.Random(seed)) != first for seed in range(8))


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    assert arguments(None, random.Random(1)) == "{}"


def test_a_schema_that_is_not_a_schema_is_refused() -> None:
    with pytest.raises(ConstraintError):
        arguments({"type": "object", "properties": {"x": {"type": "nonsense"}}}, random.Random(1))


def test_hermes_format_parses_back() -> None:
    text = hermes([Call("f", '{"a":1}'), Call("g", "{}")])
    blocks = text.split("\n")
    assert blocks[0] == tokenizer.TOOL_CALL_START
    assert json.loads(blocks[1]) == {"name": "f", "arguments": {"a": 1}}
    assert text.count(tokenizer.TOOL_CALL_END) == 2
    # The tags are whole tokens, as in Qwen's vocabulary.
    assert tokenizer.TOOL_CALL_START in tokenizer.tokens(text)


# Object schemas of the kinds tools declare: scalars, enums, arrays, nested objects, bounds.
_scalars: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "integer", "minimum": -5, "maximum": 50}),
    st.just({"type": "number", "exclusiveMinimum": 0}),
    st.just({"type": "boolean"}),
    st.just({"type": "string", "enum": ["celsius", "fahrenheit"]}),
    st.just({"type": "string", "format": "date"}),
    st.just({"type": "string", "pattern": "^[A-Z]{3}$"}),
    st.just({"type": "string", "minLength": 2, "maxLength": 5}),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: {"type": "array", "items": items, "minItems": 1}, inner),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, min_size=1).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1]}
        ),
    ),
    max_leaves=6,
)
_parameters = st.dictionaries(
    st.sampled_from(["city", "unit", "days", "query", "limit", "tags"]), _values, max_size=4
).map(
    lambda props: {
        "type": "object",
        "properties": props,
        "required": sorted(props)[: len(props) // 2],
        "additionalProperties": False,
    }
)


@settings(max_examples=150, deadline=None)
@given(parameters=_parameters, seed=st.integers(0, 2**32))
def test_arguments_always_validate(parameters: dict[str, Any], seed: int) -> None:
    text = arguments(parameters, random.Random(seed))
    value = json.loads(text)
    assert isinstance(value, dict)
    jsonschema.validate(value, parameters)
    assert text == arguments(parameters, random.Random(seed))  # same seed, same arguments
