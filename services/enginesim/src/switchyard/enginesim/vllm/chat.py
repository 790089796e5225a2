"""vLLM 0.33's chat features: messages with images and tools in, parsed outputs out.

In: `check_tool_choice` refuses a tool choice the server's flags cannot serve
(`online_renderer.render_chat`: "auto" needs `--enable-auto-tool-choice`, "required" or a
named function needs `--tool-call-parser`); `render` writes the conversation: tools
listed, assistant tool calls written back, each image counted (`images.image_tokens`) and
refused by a text-only model ("… is not a multimodal model") or past
`--limit-mm-per-prompt`; `features` decides what the model does (`tools.plan`).

Out: vLLM runs the reasoning parser, then the tool parser, over each choice's output.
`parse` does that for a whole output and `StreamParser` token by token, as the `hermes`
parser reads `<tool_call>` blocks: tool calls are extracted only with
`--enable-auto-tool-choice` (vLLM's strict tool calling routes "required" and named
choices through the same parser), the first delta of a call carries its id, type and
name and later ones its argument text, and `parallel_tool_calls: false` keeps one call.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from switchyard.enginesim import chat_template, images, reasoning, tokenizer, tools
from switchyard.enginesim.generation import off_loop
from switchyard.enginesim.vllm.errors import InvalidRequest, VllmError
from switchyard.enginesim.vllm.flags import Config

if TYPE_CHECKING:  # wire answers with this module's parsers: no import back at run time
    from switchyard.enginesim.vllm.wire import (
        ChatCompletionRequest,
        ChatMessage,
        TokenizeChatRequest,
    )

_CALL: Final = re.compile(
    rf"{tokenizer.TOOL_CALL_START}(.*?){tokenizer.TOOL_CALL_END}|{tokenizer.TOOL_CALL_START}(.*)",
    re.DOTALL,
)
_NAME: Final = re.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGUMENTS: Final = re.compile(r'"arguments"\s*:\s*')


@dataclass(frozen=True, slots=True)
class Features:
    """What a chat request asks beyond text, as this server treats it."""

    calls: tuple[tools.Tool, ...] = ()  # what the model calls (the agent-loop rule)
    reasoning: bool = False  # the model reasons first (`--reasoning-parser`)
    show_reasoning: bool = True  # `include_reasoning`
    extract_tools: bool = False  # the parser turns calls into `tool_calls`
    forced: bool = False  # "required" or a named function
    named: bool = False  # a named function: OpenAI's finish reason stays "stop"
    parallel: bool = True


def tool_choice(req: ChatCompletionRequest) -> tools.ToolChoice:
    choice = req.tool_choice
    if not req.tools or choice is None:
        return "none"
    return choice if isinstance(choice, str) else tools.Named(choice.function.name)


def check_tool_choice(req: ChatCompletionRequest, config: Config) -> None:
    """vLLM's refusal of a tool choice its flags cannot serve (a 400, no `param`)."""
    choice = req.tool_choice if req.tools is not None else None
    if config.tool_call_parser is not None or choice is None or choice == "none":
        return
    if choice == "auto":
        if not config.enable_auto_tool_choice:
            raise VllmError(
                '"auto" tool choice requires --enable-auto-tool-choice and '
                "--tool-call-parser to be set"
            )
        return
    described = f'"{choice}"' if isinstance(choice, str) else f'function "{choice.function.name}"'
    raise VllmError(f"tool_choice={described} requires --tool-call-parser to be set")


def features(req: ChatCompletionRequest, config: Config) -> Features:
    choice = tool_choice(req)
    last = req.messages[-1] if req.messages else None
    user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    defined = [tools.Tool(t.function.name, t.function.parameters) for t in req.tools or ()]
    parallel = req.parallel_tool_calls is not False
    calls = tools.plan(
        defined, choice, last_role=last.role if last else "", parallel=parallel,
        user_text=_plain_text(user) if user else "",
    )  # fmt: skip
    return Features(
        calls=calls,
        reasoning=config.reasoning_parser is not None,
        show_reasoning=req.include_reasoning,
        extract_tools=config.enable_auto_tool_choice and choice != "none",
        forced=choice == "required" or isinstance(choice, tools.Named),
        named=isinstance(choice, tools.Named),
        parallel=parallel,
    )


# --- in: the conversation as the model reads it ----------------------------------------------


async def render(
    req: ChatCompletionRequest | TokenizeChatRequest, config: Config
) -> tuple[str, int]:
    """The prompt text of a chat request and the tokens its images add."""
    text, image_tokens = await render_images(req, config)
    return text, sum(image_tokens)


async def render_images(
    req: ChatCompletionRequest | TokenizeChatRequest, config: Config
) -> tuple[str, list[int]]:
    """The prompt text of a chat request (one placeholder per image) and the tokens each
    image adds to it, in order."""
    image_tokens: list[int] = []
    count = 0
    rendered: list[dict[str, Any]] = []
    for message in req.messages:
        parts: list[str] = []
        for part in _parts(message):
            if part[0] == "text":
                parts.append(part[1])
                continue
            if not config.sim.multimodal:
                raise VllmError(f"{config.model_name} is not a multimodal model")
            count += 1
            image_tokens.append(await _image_tokens(part[1]))
            parts.append(images.PLACEHOLDER)
        calls = [
            tools.Call(c.function.name, c.function.arguments) for c in message.tool_calls or ()
        ]
        rendered.append(
            {"role": message.role, "content": "\n".join(parts), "tool_calls": tools.hermes(calls)}
        )
    if count > config.image_limit:
        raise InvalidRequest(
            f"At most {config.image_limit} image(s) may be provided in one prompt.",
            parameter="image",
        )
    definitions = [t.model_dump(exclude_none=True) for t in req.tools or ()]
    try:
        text = chat_template.render(
            rendered, add_generation_prompt=req.add_generation_prompt, tools=definitions
        )  # fmt: skip
    except ValueError as exc:
        raise VllmError(str(exc)) from None
    # continue_final_message leaves the last message open, so the model continues it.
    if req.continue_final_message:
        text = text.removesuffix(f"{tokenizer.IM_END}\n")
    return text, image_tokens


def _parts(message: ChatMessage) -> list[tuple[str, str]]:
    """A message's content as ("text", text) and ("image", url) parts, in order."""
    if message.content is None or isinstance(message.content, str):
        return [("text", message.content or "")]
    out: list[tuple[str, str]] = []
    for part in message.content:
        if part.type == "text" and part.text is not None:
            out.append(("text", part.text))
        elif part.type == "image_url" and part.image_url is not None:
            out.append(("image", part.image_url.url))
        else:
            raise VllmError(f"Unknown part type: {part.type}")
    return out


def _plain_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "\n".join(p.text for p in message.content if p.text is not None)


async def _image_tokens(url: str) -> int:
    if not url.startswith("data:"):
        # The simulator never fetches: the edge passes on data URLs only.
        raise VllmError("The simulator reads images from data URLs only")
    try:
        info = await off_loop(len(url) > images.LARGE_IMAGE, images.inspect_url, url)
    except images.ImageError as exc:
        raise VllmError(f"Failed to load the image: {exc}") from None
    return images.image_tokens(info.width, info.height)


# --- out: vLLM's parsers over the model's output --------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """A whole choice's message fields."""

    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]]


def split_reasoning(text: str) -> tuple[str | None, str | None]:
    """vLLM's `<think>` parser: (reasoning, content); no `</think>`: all reasoning."""
    head, start, rest = text.partition(tokenizer.THINK_START)
    body = rest if start else head
    if tokenizer.THINK_END not in body:
        return body, None
    thought, _, content = body.partition(tokenizer.THINK_END)
    return thought, content or None


def parse(text: str, feats: Features) -> Parsed:
    """A whole output's message fields, as vLLM's parsers make them."""
    thought, content = split_reasoning(text) if feats.reasoning else (None, text)
    calls: list[dict[str, Any]] = []
    if feats.extract_tools and content is not None and tokenizer.TOOL_CALL_START in content:
        try:
            found = [json.loads(a or b) for a, b in _CALL.findall(content)]
            calls = [
                _tool_call(c["name"], json.dumps(c["arguments"], ensure_ascii=False)) for c in found
            ]
            content = content[: content.find(tokenizer.TOOL_CALL_START)] or None
        except (ValueError, KeyError, TypeError):
            calls = []  # vLLM logs it and returns the text as it is
        if content is not None and not content.strip():
            content = None
    if feats.forced and feats.extract_tools:
        content = content or ""
    if not feats.parallel:
        calls = calls[:1]
    return Parsed(content, thought if feats.show_reasoning else None, calls)


def _tool_call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id(), "type": "function", "function": {"name": name, "arguments": arguments}
    }  # fmt: skip


def call_id() -> str:
    """vLLM's default tool call id (`make_tool_call_id`)."""
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def finish_reason(engine_reason: str, feats: Features, called: bool) -> str:
    """vLLM's `resolve_finish_reason`: "tool_calls" when calls came and the model stopped
    itself, unless one named function was forced (OpenAI says "stop" then)."""
    if called and engine_reason == "stop" and not feats.named:
        return "tool_calls"
    return engine_reason


def reasoning_tokens(token_ids: Sequence[int]) -> int:
    """Tokens between `<think>` and `</think>` (vLLM's `count_reasoning_tokens`)."""
    start = tokenizer.token_id(tokenizer.THINK_START)
    end = tokenizer.token_id(tokenizer.THINK_END)
    count = depth = 0
    for tid in token_ids:
        if tid == start:
            depth += 1
        elif tid == end:
            depth = max(0, depth - 1)
        elif depth:
            count += 1
    return count


@dataclass(slots=True)
class StreamParser:
    """One streamed choice's parsers: each token's text in, its delta out (None: nothing
    to send yet, as for the tags themselves)."""

    feats: Features
    _thinking: reasoning.Splitter = field(default_factory=reasoning.Splitter)
    _text: str = ""
    _sent: int = 0  # characters of content sent
    _names: list[str] = field(default_factory=list)
    _arguments: list[str] = field(default_factory=list)
    called: bool = False  # a tool call went out
    reasoning_tokens: int = 0

    def feed(self, piece: str) -> dict[str, Any] | None:
        if self.feats.reasoning:
            thought, piece = self._thinking.feed(piece)
            if thought:
                self.reasoning_tokens += 1
                return {"reasoning": thought} if self.feats.show_reasoning else None
            if not piece:
                return None
        if not self.feats.extract_tools:
            return {"content": piece}
        self._text += piece
        content = self._content()
        deltas = self._tool_deltas()
        if not self.feats.parallel:
            deltas = [d for d in deltas if d["index"] == 0]
        if deltas:
            self.called = True
            return {"content": content, "tool_calls": deltas}
        return {"content": content} if content else None

    def _content(self) -> str | None:
        """Text before the first `<tool_call>`, less a tail that may be the tag's start."""
        at = self._text.find(tokenizer.TOOL_CALL_START)
        if at < 0:
            at = len(self._text) - _overlap(self._text, tokenizer.TOOL_CALL_START)
        if at <= self._sent:
            return None
        content, self._sent = self._text[self._sent : at], at
        return content

    def _tool_deltas(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for i, (body, complete) in enumerate(_regions(self._text)):
            if i == len(self._names):
                match = _NAME.search(body)
                if match is None:
                    break  # the next call waits for this one's name
                self._names.append(match.group(1))
                self._arguments.append("")
                deltas.append(
                    {"id": call_id(), "type": "function", "index": i,
                     "function": {"name": match.group(1)}}
                )  # fmt: skip
            arguments = _arguments_text(body, complete)
            if arguments is not None and len(arguments) > len(self._arguments[i]):
                diff = arguments[len(self._arguments[i]) :]
                self._arguments[i] = arguments
                deltas.append({"index": i, "function": {"arguments": diff}})
        return deltas


def _regions(text: str) -> list[tuple[str, bool]]:
    """Each `<tool_call>` block's JSON text so far, and whether it is complete."""
    out: list[tuple[str, bool]] = []
    start, end = tokenizer.TOOL_CALL_START, tokenizer.TOOL_CALL_END
    pos = text.find(start)
    while pos >= 0:
        body_at = pos + len(start)
        close = text.find(end, body_at)
        if close >= 0:
            out.append((text[body_at:close].strip(), True))
            pos = text.find(start, close + len(end))
            continue
        raw = text[body_at:]
        raw = raw[: len(raw) - _overlap(raw, end)].strip()
        out.append((raw, _is_json(raw)))
        break
    return out


def _arguments_text(body: str, complete: bool) -> str | None:
    """The arguments' text in a call's JSON so far (complete: without the closing brace)."""
    match = _ARGUMENTS.search(body)
    if match is None:
        return None
    raw = body[match.end() :]
    if complete:
        raw = raw.rstrip()
        raw = raw[:-1].rstrip() if raw.endswith("}") else raw
    return raw


def _overlap(text: str, tag: str) -> int:
    """How long a tail of `text` is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return bool(text)
