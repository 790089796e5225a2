"""One request through the edge: what happened to it, recorded once at its end.

Every request ends in exactly one `Exchange.record()`, written by the request's `Claim` as
it ends: one JSON log line (request id, trace and span ids, key name — never the key —,
model, status, tokens, latency) and its metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from opentelemetry import trace

from switchyard.edge import metrics

log = structlog.get_logger("switchyard.edge.requests")

#: The metrics label for requests whose model did not resolve (client input never becomes a label).
UNROUTED = "(none)"
#: Each API's `gen_ai.operation.name` (OTel GenAI semantic conventions).
_OPERATIONS = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "messages": "chat",
}


@dataclass(slots=True)
class Exchange:
    request_id: str
    api: str  # "chat" | "completions" | "embeddings" | "responses" | "messages"
    started: float  # time.perf_counter() at arrival
    model: str = UNROUTED  # the route's served name, once resolved
    requested_model: str | None = None
    key_name: str | None = None
    tenant: str | None = None
    stream: bool = False
    #: Choices asked for (`n`); the tokens are those of all of them.
    choices: int = 1
    status: int = 200
    error_kind: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    queue_wait_s: float = 0.0
    attempts: int = 0
    endpoint: str | None = None
    client_disconnected: bool = False
    #: The backend reported the usage (a request cut short before it did has only its count).
    usage_reported: bool = False
    #: The response cache's answer: "hit", "miss", or None (not cacheable, or no cache).
    cache: str | None = None
    #: From arrival to the last byte, set by `record` (the log line's and the usage record's).
    latency_s: float | None = None
    #: The request's server span (annotated while it is open: it ends with the last byte).
    span: trace.Span = field(default_factory=trace.get_current_span)

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started
            metrics.TIME_TO_FIRST_TOKEN.labels(self.model).observe(self.ttft_s)

    def routed(self) -> None:
        """The model resolved: say so on the span (OTel GenAI conventions)."""
        if self.span.is_recording():
            self.span.set_attributes(
                {
                    "gen_ai.operation.name": _OPERATIONS.get(self.api, self.api),
                    "gen_ai.request.model": self.requested_model or "",
                    "gen_ai.response.model": self.model,
                    "switchyard.request_id": self.request_id,
                    "switchyard.api_key.name": self.key_name or "",
                }
            )

    def used(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.usage_reported = True
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        if self.span.is_recording():
            self.span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
            if self.api != "embeddings":  # an embedding has input tokens only
                self.span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)

    def fail(self, status: int, kind: str) -> None:
        self.status = status
        self.error_kind = kind

    def record(self) -> None:
        elapsed = self.latency_s = time.perf_counter() - self.started
        status = 499 if self.client_disconnected else self.status
        metrics.REQUESTS.labels(self.model, self.api, str(status)).inc()
        metrics.REQUEST_DURATION.labels(self.model, self.api).observe(elapsed)
        if self.error_kind:
            metrics.ERRORS.labels(self.model, self.error_kind).inc()
        # A hit's tokens were not processed by an engine: they are CACHE_SAVED_TOKENS instead.
        if self.prompt_tokens and self.cache != "hit":
            metrics.TOKENS.labels(self.model, "prompt").inc(self.prompt_tokens)
        if self.completion_tokens and self.cache != "hit":
            metrics.TOKENS.labels(self.model, "completion").inc(self.completion_tokens)
        log.info(
            "request",
            request_id=self.request_id,
            api=self.api,
            key=self.key_name,
            tenant=self.tenant,
            model=self.requested_model,
            route=None if self.model == UNROUTED else self.model,
            stream=self.stream,
            choices=self.choices if self.choices > 1 else None,
            status=status,
            error=self.error_kind,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
            latency_ms=round(elapsed * 1000, 1),
            queue_ms=round(self.queue_wait_s * 1000, 1) if self.queue_wait_s else None,
            endpoint=self.endpoint,
            attempts=self.attempts or None,
            client_disconnected=self.client_disconnected or None,
            cache=self.cache,
        )
