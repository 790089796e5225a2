"""JSON mode's regex: it admits the JSON objects (keys, nesting, escapes) and nothing else."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.adapter_tgi.json_object import DEPTH, JSON_OBJECT_REGEX, json_object_regex

OBJECT = re.compile(JSON_OBJECT_REGEX)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


def _levels(value: Any) -> int:
    """How many containers deep `value` goes (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((_levels(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_levels(v) for v in value), default=0)
    return 0


@given(
    document=st.dictionaries(st.text(), _values, max_size=4).filter(
        lambda d: _levels(d) <= DEPTH + 1
    ),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
)
def test_every_json_object_within_the_depth_matches(
    document: dict[str, Any], ascii_only: bool, spaced: bool
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(document, ensure_ascii=ascii_only, separators=separators)
    assert OBJECT.fullmatch(text), text


@settings(max_examples=60, deadline=None)
@given(st.from_regex(JSON_OBJECT_REGEX, fullmatch=True))
def test_everything_it_matches_is_a_json_object(text: str) -> None:
    assert isinstance(json.loads(text), dict)


def test_what_it_refuses() -> None:
    too_deep = {"a": {"b": [{"c": 1}]}}
    assert _levels(too_deep) == DEPTH + 2
    refused = [
        json.dumps(too_deep), "[]", '"text"', "1", "null", '{"a":01}', "{a:1}", '{"a":1,}',
        '{"a":"\n"}', '{"a":"\\x"}', '{"a":1}\n', '{ "a" :  1}',
    ]  # fmt: skip
    for text in refused:
        assert not OBJECT.fullmatch(text), text
    assert re.fullmatch(json_object_regex(DEPTH + 1), json.dumps(too_deep))
