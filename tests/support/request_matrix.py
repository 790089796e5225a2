"""Every shape of canonical request an adapter can be asked to translate: prompt or chat,
streamed or not, each structured-output kind, bare to full sampling (and the contract's
bounds), with and without `max_tokens`. Tests pass each through a translation and check
the engine body against the engine's own request models."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from switchyard.adapter.validation import validate, validate_embed
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import Message, generate_request

MODEL: Final = "qwen"
PROMPT: Final = "Once upon a time"
#: Every role the contract admits, a message with a name, and a tool call answered
#: (`canonical` adds the call to the assistant's message and its id to the tool's).
MESSAGES: Final[tuple[Message, ...]] = (
    ("system", "Be brief."),
    ("user", "Hi", "ann"),
    ("assistant", ""),
    ("tool", "42"),
    ("user", "And then?"),
)
TOOL_CALL: Final = pb.ToolCall(id="call_1", name="lookup", arguments='{"q": "x"}')
SCHEMA: Final = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}
CONSTRAINTS: Final[Mapping[str, pb.StructuredOutput | None]] = {
    "free": None,
    "json_schema": pb.StructuredOutput(json_schema=orjson.dumps(SCHEMA).decode()),
    "json_object": pb.StructuredOutput(json_object=pb.JsonObject()),
    "regex": pb.StructuredOutput(regex=r"[0-9]{3}-[a-z]+"),
    "choice": pb.StructuredOutput(choice=pb.Choice(choices=["yes", "no (maybe)", "a|b"])),
}
#: Sampling fields by profile; `max_tokens` varies on its own (MAX_TOKENS).
SAMPLINGS: Final[Mapping[str, Mapping[str, Any]]] = {
    "bare": {},
    "full": {
        "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 7, "presence_penalty": 0.5,
        "frequency_penalty": 0.5, "repetition_penalty": 1.1, "ignore_eos": True,
        "stop": ["\n\n", "END", "###", "Q:"],
    },
    "greedy": {"temperature": 0.0, "top_p": 0.5, "top_k": 1, "seed": 0},
    "low": {  # the contract's lower bounds (validation.py)
        "temperature": 0.01, "top_p": 0.01, "top_k": 1, "seed": -(2**63),
        "presence_penalty": -2.0, "frequency_penalty": -2.0, "repetition_penalty": 0.01,
    },
    "high": {  # ... and its upper ones
        "temperature": 100.0, "top_p": 1.0, "top_k": 2**31 - 1, "seed": 2**63 - 1,
        "presence_penalty": 2.0, "frequency_penalty": 2.0, "repetition_penalty": 100.0,
    },
}  # fmt: skip
#: Unset (to the end of the context), small, and above TGI's 1024-token chunk.
MAX_TOKENS: Final[Mapping[str, int | None]] = {"no-max": None, "max-16": 16, "max-1500": 1500}


@dataclass(frozen=True)
class Case:
    id: str
    request: pb.GenerateRequest
    stream: bool

    def __str__(self) -> str:  # the pytest id
        return self.id


def canonical(
    input_kind: str, kind: str, sampling: Mapping[str, Any], max_tokens: int | None
) -> pb.GenerateRequest:
    """One request; it passes the adapters' common validation, so it can reach a translation."""
    fields = dict(sampling)
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if input_kind == "prompt":
        request = generate_request(MODEL, prompt=PROMPT, request_id="r-1", **fields)
    else:
        request = generate_request(MODEL, messages=MESSAGES, request_id="r-1", **fields)
        request.chat.messages[2].tool_calls.append(TOOL_CALL)
        request.chat.messages[3].tool_call_id = TOOL_CALL.id
    constraint = CONSTRAINTS[kind]
    if constraint is not None:
        request.structured_output.CopyFrom(constraint)
    validate(request, MODEL)
    return request


def matrix(
    *,
    kinds: Collection[str] = tuple(CONSTRAINTS),
    refused: Mapping[str, Collection[str]] | None = None,
) -> list[Case]:
    """Every combination. `refused` lists, per input ("prompt", "chat"), the sampling fields
    the engine cannot take (the translation refuses them): profiles leave those out."""
    refused = refused or {}
    cases = []
    for input_kind, stream, kind, (profile, sampling), (max_id, max_tokens) in itertools.product(
        ("prompt", "chat"), (False, True), kinds, SAMPLINGS.items(), MAX_TOKENS.items()
    ):
        kept = {k: v for k, v in sampling.items() if k not in refused.get(input_kind, ())}
        request = canonical(input_kind, kind, kept, max_tokens)
        mode = "stream" if stream else "unary"
        cases.append(Case(f"{input_kind}-{mode}-{kind}-{profile}-{max_id}", request, stream))
    return cases


def on_the_wire(body: dict[str, Any]) -> Any:
    """The body as the engine receives it (the adapter's engine client sends orjson)."""
    return orjson.loads(orjson.dumps(body))


#: A tool's parameters and a picture for the feature cases.
TOOL_PARAMETERS: Final = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
PIXEL: Final = (  # a 2x2 PNG
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGM8ISfHwMDAxMDAwMDAAAANBAEIfXHKZgAAAABJRU5ErkJggg=="
)


def with_tools(request: pb.GenerateRequest, choice: pb.ToolChoice | None = None) -> None:
    """Two tools (the second without parameters), and `choice` if given."""
    request.tools.add(
        name="weather",
        description="The weather in a city",
        parameters=orjson.dumps(TOOL_PARAMETERS).decode(),
        strict=True,
    )
    request.tools.add(name="time_now")
    if choice is not None:
        request.tool_choice.CopyFrom(choice)


def _chat_feature(name: str) -> pb.GenerateRequest:
    request = canonical("chat", "free", {}, 64)
    if name == "tools-unset":
        with_tools(request)
    elif name == "tools-auto":
        with_tools(request, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO))
    elif name == "tools-required-serial":
        with_tools(request, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED))
        request.parallel_tool_calls = False
    elif name == "tools-none":
        with_tools(request, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE))
    elif name == "tools-named":
        with_tools(request, pb.ToolChoice(function="weather"))
    elif name == "logprobs":
        request.logprobs.top_logprobs = 3
    elif name == "logprobs-chosen-only":
        request.logprobs.SetInParent()
    elif name == "n":
        request.n = 2
    elif name == "image":
        user = request.chat.messages[-1]
        user.content = ""
        user.parts.add(text="What is in this picture?")
        user.parts.add(image=pb.Image(url=PIXEL, detail="low"))
    validate(request, MODEL)
    return request


CHAT_FEATURES: Final = (
    "tools-unset", "tools-auto", "tools-required-serial", "tools-none", "tools-named",
    "logprobs", "logprobs-chosen-only", "n", "image",
)  # fmt: skip
PROMPT_FEATURES: Final = ("logprobs", "logprobs-chosen-only", "n")


def feature_cases(
    *, chat: Collection[str] = CHAT_FEATURES, prompt: Collection[str] = PROMPT_FEATURES
) -> list[Case]:
    """One request per feature an adapter may carry (tools, logprobs, n, images), streamed
    and not: for checking bodies against the engine's own models."""
    cases: list[Case] = []
    for stream in (False, True):
        mode = "stream" if stream else "unary"
        cases.extend(Case(f"chat-{mode}-{name}", _chat_feature(name), stream) for name in chat)
        for name in prompt:
            request = canonical("prompt", "free", {}, 64)
            if name == "n":
                request.n = 2
            elif name == "logprobs":
                request.logprobs.top_logprobs = 3
            else:
                request.logprobs.SetInParent()
            cases.append(Case(f"prompt-{mode}-{name}", request, stream))
    return cases


@dataclass(frozen=True)
class EmbedCase:
    id: str
    request: pb.EmbedRequest

    def __str__(self) -> str:  # the pytest id
        return self.id


#: The inputs of embedding requests: one text, a batch, token ids, a batch of token ids.
EMBED_INPUTS: Final[Mapping[str, tuple[str | tuple[int, ...], ...]]] = {
    "text": ("The quick brown fox",),
    "texts": ("first passage", "second, longer passage of text", "third"),
    "tokens": ((1, 2, 3),),
    "token-lists": ((1, 2, 3), (4,), (5, 6)),
}


def embed_matrix() -> list[EmbedCase]:
    """Every shape of embedding request: each input kind, with and without `dimensions`."""
    cases = []
    for (name, inputs), dimensions in itertools.product(EMBED_INPUTS.items(), (None, 64)):
        request = pb.EmbedRequest(request_id="r-1", model=MODEL)
        for item in inputs:
            if isinstance(item, str):
                request.inputs.add(text=item)
            else:
                request.inputs.add(tokens=pb.TokenIds(ids=item))
        if dimensions is not None:
            request.dimensions = dimensions
        validate_embed(request, MODEL)
        suffix = "" if dimensions is None else f"-dimensions-{dimensions}"
        cases.append(EmbedCase(f"{name}{suffix}", request))
    return cases
