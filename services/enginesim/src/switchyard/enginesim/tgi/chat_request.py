"""The OpenAI-layer `ChatRequest` and its translation to a native request (`try_into_generate`).

TGI's own mapping: `temperature: 0` means greedy (`do_sample: false`, no temperature),
anything else samples; `presence_penalty` becomes `repetition_penalty = p + 2`;
`top_logprobs` becomes `top_n_tokens`; `response_format` is a `GrammarType`
(`{type, value}`, not OpenAI's shape); `model` is a LoRA adapter id unless it is "tgi";
`n` is read and ignored. The prompt is the chat template applied to the messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.enginesim import chat_template
from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.tgi.errors import InferError, data_error
from switchyard.enginesim.tgi.params import Grammar, Parameters, parse_grammar
from switchyard.enginesim.tgi.wire import Fields


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str | None
    messages: list[dict[str, str]]
    parameters: Parameters
    stream: bool
    include_usage: bool
    logprobs: bool
    has_tools: bool
    response_format: Grammar | None


def _content(value: object, path: str) -> str:
    """A message's text: a string, or text and image chunks (images as `![](url)`)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise data_error(f"{path}: data did not match any variant of untagged enum MessageContent")
    parts = []
    for i, chunk in enumerate(value):
        f = Fields(chunk, "MessageChunk", f"{path}[{i}]")
        kind = f.text("type")
        if kind == "text":
            parts.append(f.text("text"))
        elif kind == "image_url":
            image = Fields(f.required("image_url"), "Url", f"{path}[{i}].image_url")
            parts.append(f"![]({image.text('url')})")
        else:
            raise data_error(
                f"{path}[{i}]: unknown variant `{kind}`, expected `text` or `image_url`"
            )
    return "".join(parts)


def _messages(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise data_error(f"messages: invalid type: {unexpected(value)}, expected a sequence")
    out = []
    for i, raw in enumerate(value):
        f = Fields(raw, "Message", f"messages[{i}]")
        role = f.text("role")
        if f.present("content") and f.raw("content") is not None:
            content = _content(f.raw("content"), f"messages[{i}].content")
        elif f.present("tool_calls"):
            content = ""
        else:
            raise data_error(
                f"messages[{i}]: data did not match any variant of untagged enum MessageBody"
            )
        out.append({"role": role, "content": content})
    return out


def parse_chat_request(body: object) -> ChatRequest:
    f = Fields(body, "ChatRequest")
    messages = _messages(f.required("messages"))
    options = f.nested("stream_options", "StreamOptions")
    include_usage = options.flag("include_usage") if options is not None else False
    max_tokens = f.integer("max_tokens", "u32")
    if max_tokens is None:
        max_tokens = f.integer("max_completion_tokens", "u32")
    temperature = f.number("temperature")
    presence = f.number("presence_penalty")
    f.integer("n", "u32")
    greedy = temperature == 0.0
    tools = f.raw("tools")
    parameters = Parameters(
        temperature=None if greedy else temperature,
        repetition_penalty=None if presence is None else presence + 2.0,
        frequency_penalty=f.number("frequency_penalty"),
        top_p=f.number("top_p"),
        do_sample=not greedy,
        max_new_tokens=max_tokens,
        stop=tuple(f.strings("stop", nullable=True) or ()),
        details=True,
        decoder_input_details=False,  # unlike `/v1/completions`
        seed=f.integer("seed", "u64"),
        top_n_tokens=f.integer("top_logprobs", "u32"),
        grammar=parse_grammar(f.raw("response_format"), "response_format"),
        adapter_id=_adapter(f.string("model")),
    )
    return ChatRequest(
        model=f.string("model"),
        messages=messages,
        parameters=parameters,
        stream=f.flag("stream"),
        include_usage=include_usage,
        logprobs=bool(f.optional_flag("logprobs")),
        has_tools=isinstance(tools, list) and len(tools) > 0,
        response_format=parameters.grammar,
    )


def _adapter(model: str | None) -> str | None:
    return model if model is not None and model != "tgi" else None


def chat_inputs(request: ChatRequest) -> str:
    """The templated prompt, or TGI's template and tool errors."""
    if request.has_tools:
        if request.response_format is not None:
            raise InferError("tool_error", "Grammar and tools are mutually exclusive")
        raise InferError("tool_error", "tool calling is not simulated")
    try:
        return chat_template.render(request.messages)
    except ValueError as exc:
        raise InferError("template_error", str(exc)) from None
