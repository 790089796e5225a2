"""The native request body: `GenerateRequest {inputs, parameters: GenerateParameters}`.

Deserialization only (types, defaults, the grammar's tagged shape), as serde does it in
`router/src/lib.rs`; the value rules live in `validation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.tgi.errors import data_error
from switchyard.enginesim.tgi.wire import Fields

GrammarKind = Literal["json", "regex", "json_schema"]
_GRAMMAR_KINDS: Final = ("json", "json_object", "regex", "json_schema")


@dataclass(frozen=True, slots=True)
class Grammar:
    """`GrammarType`: `{"type": "json"|"json_object"|"regex"|"json_schema", "value": ...}`.

    `json_object` is serde's alias of `json`; `json_schema` takes `{name?, schema}`.
    """

    kind: GrammarKind
    value: Any


@dataclass(frozen=True, slots=True)
class Parameters:
    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: tuple[str, ...] = ()
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: Grammar | None = None
    adapter_id: str | None = None


#: What a request without any `parameters` object gets (`default_parameters()`): unlike
#: an empty object, it samples.
DEFAULT_PARAMETERS: Final = Parameters(do_sample=True)


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    inputs: str
    parameters: Parameters
    stream: bool = False  # only on the compat route `POST /`


def parse_grammar(value: object, path: str) -> Grammar | None:
    if value is None:
        return None
    f = Fields(value, "GrammarType", path)
    kind = f.required("type")
    if kind not in _GRAMMAR_KINDS:
        expected = ", ".join(f"`{k}`" for k in _GRAMMAR_KINDS)
        shown = f"`{kind}`" if isinstance(kind, str) else unexpected(kind)
        raise data_error(f"{path}: unknown variant {shown}, expected one of {expected}")
    body = f.required("value")
    if kind == "regex":
        if not isinstance(body, str):
            raise data_error(f"{path}.value: invalid type: {unexpected(body)}, expected a string")
        return Grammar("regex", body)
    if kind == "json_schema":
        config = Fields(body, "JsonSchemaConfig", f"{path}.value")
        config.string("name")
        return Grammar("json_schema", config.required("schema"))
    return Grammar("json", body)


def parse_parameters(value: object, path: str = "parameters") -> Parameters:
    f = Fields(value, "GenerateParameters", path)
    stop = f.strings("stop", nullable=False)
    return Parameters(
        best_of=f.integer("best_of", "usize"),
        temperature=f.number("temperature"),
        repetition_penalty=f.number("repetition_penalty"),
        frequency_penalty=f.number("frequency_penalty"),
        top_k=f.integer("top_k", "i32"),
        top_p=f.number("top_p"),
        typical_p=f.number("typical_p"),
        do_sample=f.flag("do_sample"),
        max_new_tokens=f.integer("max_new_tokens", "u32"),
        return_full_text=f.optional_flag("return_full_text"),
        stop=tuple(stop or ()),
        truncate=f.integer("truncate", "usize"),
        watermark=f.flag("watermark"),
        details=f.flag("details"),
        decoder_input_details=f.flag("decoder_input_details"),
        seed=f.integer("seed", "u64"),
        top_n_tokens=f.integer("top_n_tokens", "u32"),
        grammar=parse_grammar(f.raw("grammar"), f"{path}.grammar"),
        adapter_id=f.string("adapter_id"),
    )


def parse_generate_request(body: object, *, compat: bool = False) -> GenerateRequest:
    """A `GenerateRequest` (`compat`: a `CompatGenerateRequest`, with `stream`)."""
    f = Fields(body, "CompatGenerateRequest" if compat else "GenerateRequest")
    inputs = f.text("inputs")
    present = f.present("parameters")
    parameters = parse_parameters(f.raw("parameters")) if present else DEFAULT_PARAMETERS
    stream = f.flag("stream") if compat else False
    return GenerateRequest(inputs, parameters, stream)
