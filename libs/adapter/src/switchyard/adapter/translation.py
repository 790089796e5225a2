"""What an engine adapter must say about its engine: the one engine-specific module per adapter.

The adapter core (gRPC server, health, load reports, deadlines, telemetry, shutdown) is
shared; each adapter supplies one `Translation` subclass that knows its engine's HTTP API:
how to phrase a canonical request, how to read its responses and streams, how its errors
look, how it reports readiness and load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Protocol, TypeAlias

import grpc
import orjson

from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

FinishReason: TypeAlias = pb.FinishReason.ValueType
Capability: TypeAlias = pb.Capability.ValueType
NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
#: What a generation model serves.
GENERATION: Final[frozenset[Capability]] = frozenset(
    {pb.CAPABILITY_CHAT, pb.CAPABILITY_COMPLETIONS}
)
#: What an embedding model serves.
EMBEDDINGS: Final[frozenset[Capability]] = frozenset({pb.CAPABILITY_EMBEDDINGS})


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One HTTP call to the engine: a POST of a JSON body.

    `abort_id` is what the engine's abort route takes for this call (SGLang's `rid`), set by
    translations whose engine has one. It must be unique per engine call, never the caller's
    request id verbatim: two calls with one id collide in the engine.
    """

    path: str
    body: dict[str, Any]
    abort_id: str | None = None
    #: Several ids, where one call holds several engine requests (SGLang's batch of
    #: embeddings, one rid per input): each is aborted. Used instead of `abort_id` when set.
    abort_ids: tuple[str, ...] = ()

    @property
    def aborts(self) -> tuple[str, ...]:
        """Every id to abort when the call is left early."""
        if self.abort_ids:
            return self.abort_ids
        return (self.abort_id,) if self.abort_id is not None else ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made; `arguments` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated choice of a unary completion."""

    text: str
    finish_reason: FinishReason
    index: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    #: The model's reasoning, apart from `text` (engines started with a reasoning parser).
    reasoning: str = ""
    logprobs: tuple[pb.TokenLogprob, ...] = ()
    #: With finish_reason STOP: the caller's stop string that ended the choice ("" for EOS
    #: or a stop token id).
    stop_sequence: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole (unary) completion, read from the engine's response.

    `completion_tokens` is summed over the choices; the prompt is counted once.
    """

    choices: tuple[Choice, ...]
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        """Choice 0's text (what callers from before `choices` read)."""
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> FinishReason:
        """Choice 0's finish reason."""
        return self.choices[0].finish_reason if self.choices else pb.FINISH_REASON_UNSPECIFIED


# Not frozen, though never changed once made: one is made per token, and a frozen
# dataclass's __init__ (object.__setattr__ per field) costs four times as much.
@dataclass(slots=True)
class Delta:
    """What one stream event adds, to choice `index` (read-only by convention).

    `token_count` is the number of generated tokens this event accounts for. Usage, when
    the engine reports it, is cumulative (`completion_tokens` so far, over all choices).
    `tool_calls` are fragments: a call's first has its id and name, later ones continue its
    arguments.
    """

    text: str = ""
    token_count: int = 0
    finish_reason: FinishReason = pb.FINISH_REASON_UNSPECIFIED
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    index: int = 0
    tool_calls: tuple[pb.ToolCallDelta, ...] = ()
    reasoning: str = ""
    logprobs: tuple[pb.TokenLogprob, ...] = ()
    #: On the delta that finishes a choice with STOP: the stop string that ended it, if any.
    stop_sequence: str = ""


@dataclass(frozen=True, slots=True)
class Embeddings:
    """An engine's answer to an embedding call: one vector per input, in input order, as
    little-endian float32 bytes, and the tokens of all inputs together."""

    vectors: tuple[bytes, ...]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """What the engine serves, as read at readiness (what ListModels tells the edge).

    `max_model_len`: the context length (prompt plus completion); for an embedding model,
    the most tokens one input may have. `identity`: the engine kind and what the engine says
    of the weights it serves ("" when it says nothing: nothing is then cached for it).
    """

    capabilities: frozenset[Capability]
    max_model_len: int
    embedding_dimensions: int = 0
    identity: str = ""

    def serves(self, capability: Capability) -> bool:
        return capability in self.capabilities


@dataclass(frozen=True, slots=True)
class LoadMetrics:
    """The engine's Prometheus gauges behind a load report."""

    running: str
    waiting: str
    kv_cache_usage: str | None = None


class EngineHTTP(Protocol):
    """What a translation may ask of its engine besides generating: JSON in, JSON out.

    Both raise `EngineHTTPError` for an error status or an engine that cannot be reached.
    """

    async def get_json(self, path: str) -> Any: ...

    async def post_json(self, path: str, body: Any) -> Any: ...


#: What engines answer a missing or wrong `--api-key` with.
AUTH_REFUSED: Final = frozenset({401, 403})


class EngineHTTPError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def credentials_refused(self) -> bool:
        """Whether the engine refused the adapter's key (`ADAPTER_ENGINE_API_KEY`)."""
        return self.status in AUTH_REFUSED

    def on_route(self, route: str) -> EngineHTTPError:
        """This error, said of `route` (e.g. "GET /v1/models"); a refused key says what to set."""
        if not self.credentials_refused:
            return self
        return EngineHTTPError(
            f"the engine refused the adapter's credentials on {route} (HTTP {self.status}): "
            "set ADAPTER_ENGINE_API_KEY to the engine's --api-key",
            self.status,
        )


def _content_part(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("kind") == "image":
        image: dict[str, str] = {"url": part.image.url}
        if part.image.detail:
            image["detail"] = part.image.detail
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part.text}


def tool_call_json(call: pb.ToolCall) -> dict[str, Any]:
    """A call an assistant made, as OpenAI's `tool_calls` item."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_message(m: pb.ChatMessage) -> dict[str, Any]:
    """One message in OpenAI's shape: text or content parts, an assistant's tool calls, a
    tool result's `tool_call_id`."""
    message: dict[str, Any] = {"role": m.role}
    if m.parts:
        message["content"] = [_content_part(p) for p in m.parts]
    elif m.content or not m.tool_calls:
        # An assistant's message of only tool calls has no content (OpenAI's shape, and
        # the only one TGI's message schema admits).
        message["content"] = m.content
    if m.name:
        message["name"] = m.name
    if m.tool_calls:
        message["tool_calls"] = [tool_call_json(c) for c in m.tool_calls]
    if m.tool_call_id:
        message["tool_call_id"] = m.tool_call_id
    return message


def chat_messages(request: pb.GenerateRequest) -> list[dict[str, Any]]:
    """The request's chat as OpenAI's `messages` (every engine's chat route takes them)."""
    return [chat_message(m) for m in request.chat.messages]


def tools_json(request: pb.GenerateRequest) -> list[dict[str, Any]]:
    """The request's (validated) tools as OpenAI's `tools`."""
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        if tool.parameters:  # validated as a JSON Schema object; empty: no parameters
            function["parameters"] = orjson.loads(tool.parameters)
        if tool.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tools


_TOOL_CHOICE_MODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        pb.TOOL_CHOICE_MODE_AUTO: "auto",
        pb.TOOL_CHOICE_MODE_NONE: "none",
        pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    }
)


def tool_choice_json(request: pb.GenerateRequest) -> str | dict[str, Any] | None:
    """OpenAI's `tool_choice` for the request; None when unset (the engine's default: auto
    with tools)."""
    if not request.HasField("tool_choice"):
        return None
    choice = request.tool_choice
    kind = choice.WhichOneof("kind")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.function}}
    if kind == "mode":
        return _TOOL_CHOICE_MODES.get(choice.mode)
    return None


def add_tools(body: dict[str, Any], request: pb.GenerateRequest) -> None:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` into a chat `body`."""
    if not request.tools:
        return
    body["tools"] = tools_json(request)
    choice = tool_choice_json(request)
    if choice is not None:
        body["tool_choice"] = choice
    if request.HasField("parallel_tool_calls"):
        body["parallel_tool_calls"] = request.parallel_tool_calls


def wants_logprobs(request: pb.GenerateRequest) -> bool:
    return request.HasField("logprobs")


def choice_count(request: pb.GenerateRequest) -> int:
    """`n`, where 0 means 1."""
    return request.n or 1


def uses_images(request: pb.GenerateRequest) -> bool:
    return any(p.WhichOneof("kind") == "image" for m in request.chat.messages for p in m.parts)


def features_used(request: pb.GenerateRequest) -> list[str]:
    """The features among `FEATURES` that `request` asks for (in a fixed order)."""
    used = []
    if request.tools or request.HasField("tool_choice") or _tool_history(request):
        used.append("tools")
    if uses_images(request):
        used.append("images")
    if wants_logprobs(request):
        used.append("logprobs")
    if choice_count(request) > 1:
        used.append("n")
    return used


def _tool_history(request: pb.GenerateRequest) -> bool:
    return any(m.tool_calls or m.tool_call_id for m in request.chat.messages)


def stop_string(finish: FinishReason, matched: Any) -> str:
    """The stop string an engine says ended a choice: a string (not a stop token id, an
    int) on a STOP finish; "" otherwise."""
    if finish != pb.FINISH_REASON_STOP or not isinstance(matched, str):
        return ""
    return matched


def unsupported_feature(message: str, param: str | None = None) -> InferenceError:
    """INVALID_ARGUMENT / UNSUPPORTED_FEATURE: the engine, as started, cannot serve this."""
    meta = {"param": param} if param else None
    return InferenceError(grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE, message, meta)


_REGEX_SPECIAL: Final = frozenset("\\^$.|?*+()[]{}")


def regex_literal(text: str) -> str:
    """`text` as a regex matching exactly it: only regex metacharacters are escaped, which
    every engine's grammar backend (xgrammar, outlines, llguidance) reads alike."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def choice_regex(choices: Iterable[str]) -> str:
    """A regex matching exactly one of `choices` (engines that constrain a choice by regex)."""
    return "(" + "|".join(regex_literal(c) for c in choices) + ")"


class StreamParser(ABC):
    """Reads one request's stream events; may keep state (e.g. cumulative text)."""

    @abstractmethod
    def feed(self, event: str, data: Any) -> Delta | None:
        """One decoded SSE event (`event` name, JSON `data`) → a delta, or None to skip.

        Raise `InferenceError` for an error event.
        """


#: The request features a translation may declare (see `Translation.features`).
FEATURES: Final = frozenset({"tools", "images", "logprobs", "n", "reasoning"})


class Translation(ABC):
    """The engine-specific half of an adapter."""

    #: The engine's name in the engine registry (`switchyard.engines`) and the contract.
    engine: ClassVar[str]
    #: What this translation can carry to its engine, among `FEATURES`: a request using
    #: another is refused (UNSUPPORTED_FEATURE) before the engine is called.
    features: ClassVar[frozenset[str]] = frozenset()
    #: Whether the engine generates `n` choices in one call. If not, the engine client makes
    #: n calls of one choice each and merges them.
    native_n: ClassVar[bool] = True
    #: GET this path; 200 means the engine can generate.
    health_path: ClassVar[str] = "/health"
    #: Prometheus exposition of the engine.
    metrics_path: ClassVar[str] = "/metrics"
    load_metrics: ClassVar[LoadMetrics]

    def __init__(self, served_model_name: str) -> None:
        self.served_model_name = served_model_name

    @abstractmethod
    def request(self, request: pb.GenerateRequest, *, stream: bool) -> EngineRequest:
        """The engine call for a validated canonical request.

        Raise `InferenceError.unsupported` for what the engine cannot honour (never drop it).
        """

    @abstractmethod
    def completion(
        self, request: pb.GenerateRequest, body: Any, headers: Mapping[str, str] = NO_HEADERS
    ) -> Completion:
        """Read a successful non-streaming response (its JSON body and its HTTP headers)."""

    @abstractmethod
    def stream_parser(self, request: pb.GenerateRequest) -> StreamParser:
        """A parser for one streaming response."""

    @abstractmethod
    def error(self, status: int, body: bytes) -> InferenceError:
        """Map an engine error response (status >= 400) to the contract's error."""

    @abstractmethod
    async def max_model_len(self, engine: EngineHTTP) -> int:
        """The context length the engine serves, read from its info routes (0 if unknown)."""

    async def describe(self, engine: EngineHTTP) -> ModelDescription:
        """What the engine serves, read before the adapter reports ready (and again after
        anything that may have changed the engine). The default: a generation model, of
        unknown identity; translations override it with what their engine tells."""
        return ModelDescription(GENERATION, await self.max_model_len(engine))

    def embed_request(self, request: pb.EmbedRequest) -> EngineRequest:
        """The engine call for a validated embedding request (all its inputs in one call).

        The default: the engine serves no embeddings.
        """
        raise unsupported_feature(f"model '{request.model}' does not support embeddings", "model")

    def embeddings(self, request: pb.EmbedRequest, body: Any) -> Embeddings:
        """Read a successful embedding response: one vector per input, in input order."""
        raise InferenceError.engine_failed(f"the {self.engine} adapter reads no embeddings")

    def count_request(self, request: pb.GenerateRequest) -> EngineRequest:
        """The engine call that tokenizes a validated request's prompt as a generation of it
        would read it (chat template, tools, images), generating nothing.

        Raise `unsupported_feature` for what the engine cannot count exactly (never
        undercount). The default: the engine has no tokenize route.
        """
        raise unsupported_feature(f"the {self.engine} adapter cannot count tokens")

    def token_count(self, request: pb.GenerateRequest, body: Any) -> int:
        """Read a successful tokenize answer: the prompt's token count."""
        raise InferenceError.engine_failed(f"the {self.engine} adapter reads no token counts")

    async def abort(self, engine: EngineHTTP, abort_id: str) -> None:  # noqa: B027
        """Tell the engine to stop the call whose `EngineRequest.abort_id` this is.

        Closing the HTTP connection already cancels in every engine; engines with an explicit
        abort route (SGLang) override this to free the slot without waiting for detection.
        """
