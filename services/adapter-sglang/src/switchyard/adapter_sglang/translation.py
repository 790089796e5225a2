"""SGLang's HTTP API in the terms of the inference contract (SGLang 0.5.23).

- Every engine call has a `rid` of its own (the request id plus a random suffix), never
  the caller's id verbatim: SGLang refuses a rid already in flight (400 "Duplicate request
  ID detected"), aborts whatever holds a streamed request's rid about 2 s after that stream
  ended, and aborts by rid *prefix*. The adapter aborts a call it left by that rid
  (`/abort_request`).
- Prompts go to the native `POST /generate`. Its stream is **cumulative**: every event
  repeats the whole text and `output_ids` so far; the parser turns that into deltas. (An
  engine started with --incremental-streaming-output sends deltas instead; the parser tells
  the two apart by `len(output_ids) < meta_info.completion_tokens` and reads both.) Token
  counts come from `meta_info.completion_tokens`, which is cumulative either way.
- Chat goes to `POST /v1/chat/completions`; streams ask for
  `stream_options: {include_usage, continuous_usage_stats}` so that every content chunk
  carries the exact cumulative `completion_tokens`, and the final usage chunk accounts
  for tokens that produced no text (end of sequence, stop strings).
- No `max_tokens`: generate until a stop or the end of the context. The chat route does
  that when the field is absent; `/generate` would stop at 128, so it gets an explicit
  `"max_new_tokens": null` (the scheduler then allows context - prompt - 2 tokens).
- `seed` is passed on as `sampling_seed`, which SGLang reads only when started with
  --enable-deterministic-inference (a ModelBackend's `args`). Without the flag it is ignored;
  that is within OpenAI's own contract for `seed` ("best effort", determinism not
  guaranteed), so it is documented rather than refused: refusing would break every client
  that always sends a seed.
- Structured outputs: native `sampling_params.json_schema` (the schema as a JSON string),
  and `regex`; chat `response_format` and the `regex` extra. `json_object`
  is SGLang's own mapping, the schema `{"type": "object"}` (xgrammar: any object); a
  choice is an alternation regex.
- Errors: OpenAI routes answer a flat `{"object":"error","message",...}`; `/generate`
  answers `{"error":{"message"}}` (or `{"error":"..."}` from its JSON contract gate);
  streams end with an abort `finish_reason` (a full queue: `status_code` 503) or an
  `{"error": {...}}` event.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

import orjson

from switchyard.adapter import translation as base
from switchyard.adapter.openai_stream import OpenAIStream
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

#: SGLang's messages for a request that does not fit the context (tokenizer manager and
#: the chat route's own check).
_CONTEXT_OVERFLOW: Final = re.compile(
    r"longer than the model's context length"
    r"|exceeds the model's maximum context length"
    r"|max_completion_tokens is too large"
)
_MAX_MESSAGE: Final = 1000


def _sampling_params(s: pb.SamplingParams) -> dict[str, Any]:
    """Native `sampling_params`; unset fields are left to SGLang, except max_new_tokens."""
    # Absent, SGLang stops at 128; null lets the request run to the end of the context.
    params: dict[str, Any] = {"max_new_tokens": s.max_tokens if s.HasField("max_tokens") else None}
    for name in ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty"):
        if s.HasField(name):
            params[name] = getattr(s, name)
    if s.HasField("repetition_penalty"):
        params["repetition_penalty"] = s.repetition_penalty
    if s.stop:
        params["stop"] = list(s.stop)
    if s.HasField("seed"):
        params["sampling_seed"] = s.seed
    if s.ignore_eos:
        params["ignore_eos"] = True
    return params


def _native_constraint(so: pb.StructuredOutput) -> dict[str, str]:
    kind = so.WhichOneof("kind")
    if kind == "json_schema":
        return {"json_schema": so.json_schema}
    if kind == "json_object":
        return {"json_schema": '{"type": "object"}'}
    if kind == "regex":
        return {"regex": so.regex}
    if kind == "choice":
        return {"regex": base.choice_regex(so.choice.choices)}
    return {}


def _chat_constraint(so: pb.StructuredOutput) -> dict[str, Any]:
    """JSON through `response_format`; a regex as the same top-level extra as native."""
    kind = so.WhichOneof("kind")
    if kind == "json_schema":
        schema = orjson.loads(so.json_schema)
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
        }
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    return _native_constraint(so)


def engine_rid(request: pb.GenerateRequest) -> str:
    """SGLang's `rid` for one call: unique per call, never the caller's id verbatim.

    SGLang refuses a `rid` already in flight (400 "Duplicate request ID detected") and aborts
    whatever holds a `rid` about two seconds after a stream with it ended; a caller's id
    reused by a retry or a second request would collide either way. Its scheduler aborts
    every request whose rid *starts with* the aborted one: the random suffix keeps one
    call's abort from reaching another call (whose id would have to begin with this rid).
    """
    return f"{request.request_id}-{secrets.token_hex(6)}"


def _chat_body(request: pb.GenerateRequest, model: str, stream: bool, rid: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": base.chat_messages(request),
        "rid": rid,
        "stream": stream,
    }
    params = _sampling_params(request.sampling)
    # Absent on the chat route already means "up to the end of the context".
    max_tokens = params.pop("max_new_tokens")
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    if "sampling_seed" in params:
        body["seed"] = params.pop("sampling_seed")
    body.update(params)
    if request.HasField("structured_output"):
        body.update(_chat_constraint(request.structured_output))
    if stream:
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return body


def _bad_request(message: str) -> InferenceError:
    if _CONTEXT_OVERFLOW.search(message):
        return InferenceError.context_length(message)
    return InferenceError.invalid(message)


def _by_status(status: int | None, message: str) -> InferenceError:
    """The contract's error for an SGLang status code (HTTP, or an abort's `status_code`)."""
    if status in (400, 422):
        return _bad_request(message)
    if status in (429, 503):  # SGLang's 503s on generation: a full queue, a timed-out wait
        return InferenceError.overloaded(message)
    return InferenceError.engine_failed(f"the engine failed the request: {message}")


def _finish(finish: Any) -> base.FinishReason:
    """A native `meta_info.finish_reason` (a dict, or null until the end)."""
    if finish is None:
        return pb.FINISH_REASON_UNSPECIFIED
    if not isinstance(finish, dict):
        raise InferenceError.engine_failed(f"unexpected finish_reason from the engine: {finish!r}")
    return _finish_type(finish.get("type"), finish)


def _finish_type(kind: Any, abort: dict[str, Any] | None = None) -> base.FinishReason:
    """A finish reason by its type ("stop", "length", "abort", ...); an abort is an error."""
    if kind is None:
        return pb.FINISH_REASON_UNSPECIFIED
    if kind == "length":
        return pb.FINISH_REASON_LENGTH
    if kind == "abort":
        abort = abort or {}
        status = abort.get("status_code")
        message = str(abort.get("message") or "the engine aborted the request")
        raise _by_status(status if isinstance(status, int) else None, message)
    return pb.FINISH_REASON_STOP  # stop, tool_calls, ...


def _error_event(data: dict[str, Any]) -> InferenceError:
    """An `{"error": ...}` event inside a stream."""
    error = data["error"]
    if isinstance(error, dict):
        code = error.get("code")
        return _by_status(code if isinstance(code, int) else None, str(error.get("message")))
    return InferenceError.engine_failed(f"the engine failed the request: {error}")


def _body_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:_MAX_MESSAGE]
    if isinstance(data, dict):
        if isinstance(data.get("message"), str):  # flat ErrorResponse
            return str(data["message"])
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):  # /generate's JSON contract gate
            return error
        if data.get("detail") is not None:
            return str(data["detail"])
    return str(data)[:_MAX_MESSAGE]


def _require_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InferenceError.engine_failed("the engine sent a body that is not a JSON object")
    return data


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class NativeStream(base.StreamParser):
    """`/generate` stream events → deltas (cumulative text, or deltas from an engine
    started with --incremental-streaming-output)."""

    __slots__ = ("_completion", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._completion = 0

    def feed(self, event: str, data: Any) -> base.Delta | None:
        data = _require_dict(data)
        if "error" in data:
            raise _error_event(data)
        meta = data.get("meta_info") or {}
        finish = _finish(meta.get("finish_reason"))
        completion = _count(meta.get("completion_tokens"))
        text = data.get("text") or ""
        ids = data.get("output_ids")
        if isinstance(ids, list) and len(ids) < completion and self._completion:
            delta = text  # incremental: the event holds only what is new
        elif text.startswith(self._text):
            delta = text[len(self._text) :]
        else:
            raise InferenceError.engine_failed("the engine's cumulative stream lost text")
        self._text += delta
        count = max(0, completion - self._completion)
        self._completion = max(completion, self._completion)
        prompt = meta.get("prompt_tokens")
        if not (delta or count or finish):
            return None
        return base.Delta(
            text=delta,
            token_count=count,
            finish_reason=finish,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=self._completion,
        )


class SglangTranslation(base.Translation):
    engine = "sglang"
    #: /ready: 503 while starting, paused, unhealthy or shutting down, and cheap. /health
    #: would run a one-token generation and sleep a second on every poll; it is the engine
    #: container's liveness probe instead (and marks SGLang unhealthy, which /ready reflects).
    health_path = "/ready"
    load_metrics = base.LoadMetrics(
        running="sglang:num_running_reqs",
        waiting="sglang:num_queue_reqs",
        kv_cache_usage="sglang:token_usage",
    )

    def request(self, request: pb.GenerateRequest, *, stream: bool) -> base.EngineRequest:
        rid = engine_rid(request)
        if request.WhichOneof("input") == "chat":
            body = _chat_body(request, self.served_model_name, stream, rid)
            return base.EngineRequest("/v1/chat/completions", body, abort_id=rid)
        params = _sampling_params(request.sampling)
        if request.HasField("structured_output"):
            params.update(_native_constraint(request.structured_output))
        body = {
            "text": request.prompt,
            "rid": rid,
            "stream": stream,
            "sampling_params": params,
        }
        return base.EngineRequest("/generate", body, abort_id=rid)

    def completion(
        self, request: pb.GenerateRequest, body: Any, headers: Mapping[str, str] = base.NO_HEADERS
    ) -> base.Completion:
        body = _require_dict(body)
        if request.WhichOneof("input") == "chat":
            choices = body.get("choices")
            if not choices or not isinstance(choices[0], dict):
                raise InferenceError.engine_failed("the engine's chat completion has no choice")
            choice = choices[0]
            usage = body.get("usage") or {}
            return base.Completion(
                text=(choice.get("message") or {}).get("content") or "",
                finish_reason=_finish_type(choice.get("finish_reason")),
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
            )
        meta = body.get("meta_info") or {}
        return base.Completion(
            text=body.get("text") or "",
            finish_reason=_finish(meta.get("finish_reason")),
            prompt_tokens=_count(meta.get("prompt_tokens")),
            completion_tokens=_count(meta.get("completion_tokens")),
        )

    def stream_parser(self, request: pb.GenerateRequest) -> base.StreamParser:
        if request.WhichOneof("input") == "chat":
            return OpenAIStream(chat=True, finish_reason=_finish_type, error=_error_event)
        return NativeStream()

    def error(self, status: int, body: bytes) -> InferenceError:
        return _by_status(status, _body_message(body) or f"HTTP {status}")

    async def max_model_len(self, engine: base.EngineHTTP) -> int:
        """From `/v1/models` (SGLang's `/model_info` has no context length)."""
        cards = (await engine.get_json("/v1/models") or {}).get("data") or []
        for card in cards:
            if card.get("id") == self.served_model_name and isinstance(
                card.get("max_model_len"), int
            ):
                return int(card["max_model_len"])
        return 0

    async def abort(self, engine: base.EngineHTTP, abort_id: str) -> None:
        await engine.post_json("/abort_request", {"rid": abort_id})
