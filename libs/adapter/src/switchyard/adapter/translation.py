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

from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

FinishReason: TypeAlias = pb.FinishReason.ValueType
NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


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


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole (unary) completion, read from the engine's response."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Delta:
    """What one stream event adds.

    `token_count` is the number of generated tokens this event accounts for. Usage, when
    the engine reports it, is cumulative (`completion_tokens` so far).
    """

    text: str = ""
    token_count: int = 0
    finish_reason: FinishReason = pb.FINISH_REASON_UNSPECIFIED
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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


def chat_messages(request: pb.GenerateRequest) -> list[dict[str, str]]:
    """The request's chat as OpenAI's `messages` (every engine's chat route takes them)."""
    messages = []
    for m in request.chat.messages:
        message = {"role": m.role, "content": m.content}
        if m.name:
            message["name"] = m.name
        messages.append(message)
    return messages


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


class Translation(ABC):
    """The engine-specific half of an adapter."""

    #: The engine's name in the engine registry (`switchyard.engines`) and the contract.
    engine: ClassVar[str]
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

    async def abort(self, engine: EngineHTTP, abort_id: str) -> None:  # noqa: B027
        """Tell the engine to stop the call whose `EngineRequest.abort_id` this is.

        Closing the HTTP connection already cancels in every engine; engines with an explicit
        abort route (SGLang) override this to free the slot without waiting for detection.
        """
