"""What every translation shares: OpenAI's chat messages, choice regexes, and the error for
an engine that refuses the adapter's key on a route."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from switchyard.adapter.translation import (
    EngineHTTPError,
    chat_messages,
    choice_regex,
    regex_literal,
)
from tests.support.canonical import generate_request


def test_chat_messages_carry_a_name_only_when_there_is_one() -> None:
    request = generate_request(
        "m", messages=[("system", "Be brief."), ("user", "Hi", "ann"), ("assistant", "")]
    )
    assert chat_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": ""},
    ]


@given(st.text(max_size=20))
def test_regex_literal_matches_exactly_itself(text: str) -> None:
    assert re.fullmatch(regex_literal(text), text, flags=re.DOTALL)


def test_choice_regex_matches_only_the_choices() -> None:
    choices = ["a+b", "(x)", "[y]", "plain", "dot.", "back\\slash", "{1}", "^$"]
    pattern = re.compile(choice_regex(choices))
    assert all(pattern.fullmatch(c) for c in choices)
    assert not pattern.fullmatch("aab")
    assert not pattern.fullmatch("dotx")
    assert choice_regex(["yes", "no"]) == "(yes|no)"


def test_a_refused_key_is_said_of_its_route_with_what_to_set() -> None:
    refused = EngineHTTPError("HTTP 401", 401).on_route("GET /v1/models")
    assert refused.status == 401
    assert str(refused) == (
        "the engine refused the adapter's credentials on GET /v1/models (HTTP 401): "
        "set ADAPTER_ENGINE_API_KEY to the engine's --api-key"
    )
    other = EngineHTTPError("HTTP 500", 500)
    assert other.on_route("GET /v1/models") is other
    unreachable = EngineHTTPError("connection refused")
    assert unreachable.on_route("POST /tokenize") is unreachable
