"""Every body the TGI adapter sends matches the request schema TGI's OpenAPI document gives
its route (tests/enginesim/tgi/data/tgi-openapi.json, via tests/enginesim/tgi/openapi.py).

Where the router decides otherwise than its document (`router/src/lib.rs` types,
`router/src/validation.rs` `Validation::validate`), the router wins: ROUTER_RULES replace
those properties. Without them, seed 0 and frequency_penalty -2 (both accepted) would fail,
and top_p 1 and max_new_tokens 0 (both refused with a 422) would pass.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any, Final

import pytest
from jsonschema.validators import Draft202012Validator

from switchyard.adapter_tgi.translation import TgiTranslation
from tests.enginesim.tgi import openapi
from tests.support.request_matrix import (
    CONSTRAINTS,
    PROMPT,
    Case,
    feature_cases,
    matrix,
    on_the_wire,
)

T = TgiTranslation("qwen")
_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An Option<...> field: `schema`, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


_SEED: Final = _optional({"type": "integer", "minimum": 0, "maximum": _U64})
_FREQUENCY_PENALTY: Final = _optional({"type": "number", "minimum": -2, "maximum": 2})
_TOP_P: Final = _optional({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1})
#: Property schemas as TGI's router enforces them, by component. The chat request becomes
#: GenerateParameters (`ChatRequest::try_into_generate`: temperature 0 means greedy) and
#: meets the same `validate()`.
ROUTER_RULES: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "GenerateParameters": {
        # The document: exclusiveMinimum 0. An Option<u64>: 0 is a seed like any other.
        "seed": _SEED,
        # The document: exclusiveMinimum -2. validate(): (-2.0..=2.0).contains(...).
        "frequency_penalty": _FREQUENCY_PENALTY,
        # The document: maximum 1. validate(): `value >= 1.0` is an error.
        "top_p": _TOP_P,
        # The document: minimum 0. validate(): Some(0) is an error; an Option<u32>.
        "max_new_tokens": _optional({"type": "integer", "minimum": 1, "maximum": _U32}),
    },
    "ChatRequest": {
        "seed": _SEED,
        "frequency_penalty": _FREQUENCY_PENALTY,
        "top_p": _TOP_P,
        "max_tokens": _optional({"type": "integer", "minimum": 1, "maximum": _U32}),
        "temperature": _optional({"type": "number", "minimum": 0}),
        # --max-stop-sequences (4 by default) holds for chat too; the document says nothing.
        "stop": _optional({"type": "array", "items": {"type": "string"}, "maxItems": 4}),
        # The document: nullable. A plain StreamOptions with a default: null is refused.
        "stream_options": {"$ref": "#/components/schemas/StreamOptions"},
    },
}
#: Every constraint kind; what TGI lacks is refused per route.
KINDS: Final = list(CONSTRAINTS)
REFUSED: Final = {
    "prompt": ("ignore_eos", "presence_penalty"),
    "chat": ("ignore_eos", "presence_penalty", "top_k", "repetition_penalty"),
}
CASES: Final = matrix(kinds=KINDS, refused=REFUSED)


@cache
def router_validator(component: str) -> Draft202012Validator:
    """`components.schemas.<component>` from TGI's document, ROUTER_RULES applied."""
    document = openapi.validator(component).schema
    assert isinstance(document, dict)
    schema = copy.deepcopy(document)
    schemas = schema["components"]["schemas"]
    for name, rules in ROUTER_RULES.items():
        for field, rule in rules.items():
            assert field in schemas[name]["properties"], f"{name} has no {field}"
            schemas[name]["properties"][field] = rule
    return Draft202012Validator(schema)


@cache
def request_component(path: str) -> str:
    """The request body component TGI's document names for POST `path`."""
    spec = json.loads(openapi.SPEC_PATH.read_text())
    content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    ref: str = content["schema"]["$ref"]
    return ref.rpartition("/")[2]


def tgi_refusal(path: str, body: dict[str, Any]) -> list[str]:
    """What TGI's request schema for `path` says against `body` (empty: accepted)."""
    validator = router_validator(request_component(path))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
        for e in validator.iter_errors(on_the_wire(body))
    ]


def _route(case: Case) -> str:
    if case.request.HasField("chat"):
        return "/v1/chat/completions"
    return "/generate_stream" if case.stream else "/generate"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tgi_accepts_every_body_the_adapter_sends(case: Case) -> None:
    call = T.request(case.request, stream=case.stream)
    assert call.path == _route(case)
    refusal = tgi_refusal(call.path, call.body)
    assert not refusal, f"TGI refuses {call.path} {call.body}: {refusal}"


@pytest.mark.parametrize("case", feature_cases(), ids=str)
def test_tgi_accepts_every_feature_body(case: Case) -> None:
    """Tools, tool choices, logprobs, images (a vision model), n (never sent: one call per
    choice)."""
    t = TgiTranslation("qwen")
    t.reads_images = True
    call = t.request(case.request, stream=case.stream)
    assert "n" not in call.body
    refusal = tgi_refusal(call.path, call.body)
    assert not refusal, f"TGI refuses {call.path} {call.body}: {refusal}"


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/generate", {"parameters": {}}, "(body): 'inputs' is a required property"),
        ("/generate", {"inputs": PROMPT, "parameters": {"top_p": 1.0}}, "parameters/top_p"),
        ("/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
        ("/generate", {"inputs": PROMPT, "parameters": {"seed": -1}}, "parameters/seed"),
        ("/generate_stream", {"inputs": PROMPT, "parameters": {"stop": ["a"] * 5}}, "stop"),
        (
            "/generate",
            {"inputs": PROMPT, "parameters": {"grammar": {"type": "ebnf", "value": "x"}}},
            "parameters/grammar",
        ),
        ("/v1/chat/completions", {"model": "tgi"}, "'messages' is a required property"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "stream_options": None},
            "stream_options",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "temperature": -0.5},
            "temperature",
        ),
    ],
)
def test_the_schemas_refuse_what_tgi_refuses(path: str, body: dict[str, Any], error: str) -> None:
    """The check can fail: bodies TGI answers with 422 (serde or validate())."""
    refusal = tgi_refusal(path, body)
    assert any(error in line for line in refusal), refusal


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"inputs": PROMPT, "parameters": {"seed": 0, "frequency_penalty": -2}}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "seed": 0}),
    ],
)
def test_the_schemas_accept_what_the_router_accepts(path: str, body: dict[str, Any]) -> None:
    """Where the document is stricter than the router (ROUTER_RULES)."""
    assert tgi_refusal(path, body) == []
