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
- Chat features: OpenAI's `tools`, `tool_choice`, `parallel_tool_calls`, image parts, `n`,
  `logprobs`/`top_logprobs`; reasoning comes back as `reasoning_content` (with
  --reasoning-parser; `separate_reasoning` defaults to true). SGLang finishes every choice
  that called tools "tool_calls", a forced named one included. `/generate` takes `n` in
  `sampling_params` (parallel samples under fresh rids, events tagged `index`) and
  logprobs as `return_logprob`/`top_logprobs_num`, answered in
  `meta_info.output_token_logprobs` / `output_top_logprobs` (`[logprob, id, text]`).
  Images to a text-only model: 400 "Model only supports text input; ...":
  UNSUPPORTED_FEATURE.
- Errors: OpenAI routes answer a flat `{"object":"error","message",...}`; `/generate`
  answers `{"error":{"message"}}` (or `{"error":"..."}` from its JSON contract gate);
  streams end with an abort `finish_reason` (a full queue: `status_code` 503) or an
  `{"error": {...}}` event.
- Embeddings (a model started with `--is-embedding`; `/model_info` says `is_generation:
  false`, and such a model serves no generation) go to `POST /v1/embeddings`, every input
  in one call, always as a list (`input` of texts or of token-id lists) with one `rid` per
  input (SGLang wants a list of rids for a batch, and aborts each by its own rid: its
  tokenizer manager forwards an abort only for a rid it holds), and `encoding_format:
  "base64"`, which SGLang packs as little-endian float32 (`serving_embedding.py`). SGLang
  refuses empty or blank texts and checks `dimensions` against the model's
  `is_matryoshka` / `matryoshka_dimensions` and hidden size (`tokenizer_manager.py`): not
  Matryoshka is UNSUPPORTED_FEATURE, another size INVALID_REQUEST. An input must be shorter
  than the context (it refuses `tokens >= context_len`), so an embedding model's
  `max_model_len` is reported one below it. No route tells the vector size: readiness
  embeds one small text. The identity is `/model_info`'s `model_path` (and its
  `weight_version`, which a weight update changes).
- CountTokens: `POST /v1/tokenize` with `messages`, `tools` and `tool_choice` (rendered as
  the chat route renders them) or `prompt`; answer `count`. Images are refused
  (UNSUPPORTED_FEATURE): that route counts an image as its one placeholder token, expanded
  only in generation. The stop string that ended a choice: chat `matched_stop`, native
  `meta_info.finish_reason.matched` (a string; an int is a stop token id, EOS included).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

import orjson

from switchyard.adapter import translation as base
from switchyard.adapter.openai_embeddings import dimensions_of, inputs_json, read_embeddings
from switchyard.adapter.openai_stream import OpenAIStream, chat_completion
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

#: SGLang's messages for a request that does not fit the context (tokenizer manager and
#: the chat route's own check).
_CONTEXT_OVERFLOW: Final = re.compile(
    r"longer than the model's context length"
    r"|exceeds the model's maximum context length"
    r"|max_completion_tokens is too large"
)
#: SGLang's 400s for a feature the model, as served, lacks: images to a text-only model
#: (`serving_chat.py:_validate_media_content`, and its check after encoding).
_UNSUPPORTED: Final = re.compile(
    r"Model only supports text input|image input is not supported for this model"
)
#: SGLang's refusals of `dimensions` (`tokenizer_manager._validate_for_matryoshka_dim`):
#: a model that is not Matryoshka, and a size it does not take.
_NOT_MATRYOSHKA: Final = re.compile(r"does not support matryoshka representation")
_BAD_DIMENSIONS: Final = re.compile(
    r"matryoshka dimensions|Requested dimensions must be greater than 0"
    r"|dimensions are greater than max embedding dimension"
)
#: An embedding request to a generation model (`_validate_one_request`).
_NOT_EMBEDDING: Final = re.compile(r"does not appear to be an embedding model")
_MAX_MESSAGE: Final = 1000
#: What a readiness probe embeds to learn the vector size.
_PROBE_TEXT: Final = "switchyard"
#: Where SGLang's chat messages and deltas put reasoning (with --reasoning-parser and the
#: request's `separate_reasoning`, true by default).
_REASONING_KEYS: Final = ("reasoning_content",)
#: Where a chat choice names the stop that ended it: a string is a stop string, an int a
#: stop token id (EOS included). Native answers say it in `meta_info.finish_reason.matched`.
_STOP_KEY: Final = "matched_stop"
TOKENIZE: Final = "/v1/tokenize"


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


def engine_rid(request: pb.GenerateRequest | pb.EmbedRequest) -> str:
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
    base.add_tools(body, request)
    n = base.choice_count(request)
    if n > 1:
        body["n"] = n
    if base.wants_logprobs(request):
        body["logprobs"] = True
        body["top_logprobs"] = request.logprobs.top_logprobs
    if stream:
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return body


def _calls_tools(request: pb.GenerateRequest) -> bool:
    """Whether the model may answer with tool calls (tools offered, and a choice not `none`)."""
    none = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
    return bool(request.tools) and request.tool_choice != none


def _bad_request(message: str) -> InferenceError:
    if _CONTEXT_OVERFLOW.search(message):
        return InferenceError.context_length(message)
    if _UNSUPPORTED.search(message) or _NOT_EMBEDDING.search(message):
        return base.unsupported_feature(message)
    if _NOT_MATRYOSHKA.search(message):
        return base.unsupported_feature(message, "dimensions")
    if _BAD_DIMENSIONS.search(message):
        return InferenceError.invalid(message, "dimensions")
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


def _matched(finish: Any, reason: base.FinishReason) -> str:
    """The stop string a native `finish_reason` (`{"type": "stop", "matched": ...}`) names."""
    return base.stop_string(reason, finish.get("matched") if isinstance(finish, dict) else None)


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
    if kind == "tool_calls":  # the choice called tools (named ones too, unlike vLLM)
        return pb.FINISH_REASON_TOOL_CALLS
    return pb.FINISH_REASON_STOP  # stop, ...


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


def _native_logprob(entry: Any) -> pb.TokenLogprob | None:
    """One `[logprob, token_id, text]` entry of `meta_info` (text with return_text_in_logprobs)."""
    if not isinstance(entry, list | tuple) or len(entry) < 3:
        return None
    value, _, text = entry[0], entry[1], entry[2] or ""
    text = str(text)
    logprob = float(value) if isinstance(value, int | float) else -9999.0
    return pb.TokenLogprob(token=text, logprob=logprob, bytes=text.encode())


def _native_logprobs(meta: dict[str, Any], start: int, top: int) -> tuple[pb.TokenLogprob, ...]:
    """`meta_info.output_token_logprobs[start:]` with their `output_top_logprobs`."""
    chosen = meta.get("output_token_logprobs") or ()
    tops = meta.get("output_top_logprobs") or ()
    out = []
    for i in range(start, len(chosen)):
        entry = _native_logprob(chosen[i])
        if entry is None:
            continue
        alternatives = tops[i] if i < len(tops) and isinstance(tops[i], list) else ()
        ranked = [alt for alt in map(_native_logprob, alternatives) if alt is not None]
        ranked.sort(key=lambda alt: -alt.logprob)
        entry.top_logprobs.extend(ranked[:top])
        out.append(entry)
    return tuple(out)


class _Choice:
    """What a native stream has seen of one choice (`index`, with `n` > 1)."""

    __slots__ = ("completion", "logprobs", "text")

    def __init__(self) -> None:
        self.text = ""
        self.completion = 0
        self.logprobs = 0


class NativeStream(base.StreamParser):
    """`/generate` stream events → deltas (cumulative text, or deltas from an engine
    started with --incremental-streaming-output). With `n` > 1 each event carries the
    `index` of its choice."""

    __slots__ = ("_choices", "_top")

    def __init__(self, top_logprobs: int | None = None) -> None:
        self._choices: dict[int, _Choice] = {}
        #: None: no logprobs asked for (not read).
        self._top = top_logprobs

    def feed(self, event: str, data: Any) -> base.Delta | None:
        data = _require_dict(data)
        if "error" in data:
            raise _error_event(data)
        index = _count(data.get("index"))
        seen = self._choices.get(index)
        if seen is None:
            seen = self._choices[index] = _Choice()
        meta = data.get("meta_info") or {}
        finish = _finish(meta.get("finish_reason"))
        completion = _count(meta.get("completion_tokens"))
        text = data.get("text") or ""
        ids = data.get("output_ids")
        incremental = isinstance(ids, list) and len(ids) < completion and bool(seen.completion)
        if incremental:
            delta = text  # the event holds only what is new
        elif text.startswith(seen.text):
            delta = text[len(seen.text) :]
        else:
            raise InferenceError.engine_failed("the engine's cumulative stream lost text")
        seen.text += delta
        count = max(0, completion - seen.completion)
        seen.completion = max(completion, seen.completion)
        logprobs: tuple[pb.TokenLogprob, ...] = ()
        if self._top is not None:
            logprobs = _native_logprobs(meta, 0 if incremental else seen.logprobs, self._top)
            seen.logprobs += len(logprobs)
        prompt = meta.get("prompt_tokens")
        if not (delta or count or finish or logprobs):
            return None
        return base.Delta(
            text=delta,
            token_count=count,
            finish_reason=finish,
            stop_sequence=_matched(meta.get("finish_reason"), finish),
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=sum(c.completion for c in self._choices.values()),
            index=index,
            logprobs=logprobs,
        )


def _native_completion(body: Any, top: int | None) -> base.Completion:
    """`/generate`'s answer: one object, or a list of them with `n` > 1."""
    results = body if isinstance(body, list) else [body]
    choices = []
    prompt = completion = 0
    for i, result in enumerate(results):
        result = _require_dict(result)
        meta = result.get("meta_info") or {}
        finish = _finish(meta.get("finish_reason"))
        choices.append(
            base.Choice(
                text=result.get("text") or "",
                finish_reason=finish,
                index=i,
                stop_sequence=_matched(meta.get("finish_reason"), finish),
                logprobs=_native_logprobs(meta, 0, top) if top is not None else (),
            )
        )
        prompt = prompt or _count(meta.get("prompt_tokens"))
        completion += _count(meta.get("completion_tokens"))
    if not choices:
        raise InferenceError.engine_failed("the engine's response has no result")
    return base.Completion(tuple(choices), prompt, completion)


def _top_logprobs(request: pb.GenerateRequest) -> int | None:
    return request.logprobs.top_logprobs if base.wants_logprobs(request) else None


class SglangTranslation(base.Translation):
    engine = "sglang"
    features = base.FEATURES
    #: /ready: 503 while starting, paused, unhealthy or shutting down, and cheap. /health
    #: would run a one-token generation and sleep a second on every poll; it is the engine
    #: container's liveness probe instead (and marks SGLang unhealthy, which /ready reflects).
    health_path = "/ready"
    load_metrics = base.LoadMetrics(
        running="sglang:num_running_reqs",
        waiting="sglang:num_queue_reqs",
        kv_cache_usage="sglang:token_usage",
    )

    def __init__(self, served_model_name: str) -> None:
        super().__init__(served_model_name)
        #: The engine's `--tool-call-parser`, read at readiness from `/model_info` ("": none;
        #: None: not known yet, so the engine decides).
        self.tool_call_parser: str | None = None
        #: `/model_info` as last read (empty until readiness reads it).
        self._info: dict[str, Any] = {}

    def request(self, request: pb.GenerateRequest, *, stream: bool) -> base.EngineRequest:
        rid = engine_rid(request)
        if request.WhichOneof("input") == "chat":
            if self.tool_call_parser == "" and _calls_tools(request):
                # SGLang without a parser refuses nothing: `auto` calls come back as text in
                # `content`, `required` / named ones as a JSON array there. Refuse instead.
                raise base.unsupported_feature(
                    "SGLang was started without --tool-call-parser, so it cannot return tool "
                    "calls (set the ModelBackend's tool-call parser)",
                    "tools",
                )
            body = _chat_body(request, self.served_model_name, stream, rid)
            return base.EngineRequest("/v1/chat/completions", body, abort_id=rid)
        params = _sampling_params(request.sampling)
        if request.HasField("structured_output"):
            params.update(_native_constraint(request.structured_output))
        n = base.choice_count(request)
        if n > 1:
            # SGLang 0.5.23 gives the n samples fresh rids (`regenerate_rid`), which an
            # abort by this rid does not reach: closing the connection stops them (its
            # tokenizer manager aborts each request of a client that went away).
            params["n"] = n
        body = {
            "text": request.prompt,
            "rid": rid,
            "stream": stream,
            "sampling_params": params,
        }
        if base.wants_logprobs(request):
            body["return_logprob"] = True
            body["top_logprobs_num"] = request.logprobs.top_logprobs
            body["return_text_in_logprobs"] = True
        return base.EngineRequest("/generate", body, abort_id=rid)

    def completion(
        self, request: pb.GenerateRequest, body: Any, headers: Mapping[str, str] = base.NO_HEADERS
    ) -> base.Completion:
        if request.WhichOneof("input") == "chat":
            return chat_completion(
                _require_dict(body),
                finish_reason=_finish_type,
                reasoning_keys=_REASONING_KEYS,
                stop_key=_STOP_KEY,
            )
        return _native_completion(body, _top_logprobs(request))

    def stream_parser(self, request: pb.GenerateRequest) -> base.StreamParser:
        top = _top_logprobs(request)
        if request.WhichOneof("input") == "chat":
            return OpenAIStream(
                chat=True,
                finish_reason=_finish_type,
                error=_error_event,
                reasoning_keys=_REASONING_KEYS,
                top_logprobs=top,
                stop_key=_STOP_KEY,
            )
        return NativeStream(top)

    def count_request(self, request: pb.GenerateRequest) -> base.EngineRequest:
        """`/v1/tokenize`: a chat as `messages` with its tools and tool choice, rendered as
        the chat route renders them (`TokenizeRequest.to_chat_completion_request`, no
        `add_generation_prompt`: "as for a chat completion"); a prompt as `prompt`, with
        the special tokens `/generate` adds. Images are refused: SGLang's tokenize route
        counts an image as its one placeholder token, while generation expands it to the
        image's tokens in the multimodal processor (an undercount is never given)."""
        body: dict[str, Any] = {"model": self.served_model_name}
        if request.WhichOneof("input") == "chat":
            if base.uses_images(request):
                raise base.unsupported_feature(
                    "SGLang cannot count the tokens of images without generating "
                    "(its tokenize route counts an image as one placeholder token)",
                    "messages",
                )
            body["messages"] = base.chat_messages(request)
            if request.tools:
                body["tools"] = base.tools_json(request)
                choice = base.tool_choice_json(request)
                if choice is not None:
                    body["tool_choice"] = choice
        else:
            body["prompt"] = request.prompt
        return base.EngineRequest(TOKENIZE, body)

    def token_count(self, request: pb.GenerateRequest, body: Any) -> int:
        count = _require_dict(body).get("count")
        if not isinstance(count, int) or count < 0:
            raise InferenceError.engine_failed("the engine's /v1/tokenize answer has no count")
        return count

    def error(self, status: int, body: bytes) -> InferenceError:
        return _by_status(status, _body_message(body) or f"HTTP {status}")

    def embed_request(self, request: pb.EmbedRequest) -> base.EngineRequest:
        call = engine_rid(request)
        rids = tuple(f"{call}-{i}" for i in range(len(request.inputs)))
        body: dict[str, Any] = {
            "model": self.served_model_name,
            "input": inputs_json(request),
            "encoding_format": "base64",
            "rid": list(rids),
        }
        if request.HasField("dimensions"):
            body["dimensions"] = request.dimensions
        return base.EngineRequest("/v1/embeddings", body, abort_ids=rids)

    def embeddings(self, request: pb.EmbedRequest, body: Any) -> base.Embeddings:
        return read_embeddings(body, len(request.inputs))

    async def describe(self, engine: base.EngineHTTP) -> base.ModelDescription:
        context = await self.max_model_len(engine)
        path, version = self._info.get("model_path"), self._info.get("weight_version")
        identity = f"sglang:{path}" if isinstance(path, str) and path else ""
        if identity and isinstance(version, str) and version:
            identity += f"@{version}"
        if self._info.get("is_generation", True) is not False:
            return base.ModelDescription(base.GENERATION, context, identity=identity)
        answer = await engine.post_json(
            "/v1/embeddings",
            {"model": self.served_model_name, "input": [_PROBE_TEXT], "encoding_format": "base64"},
        )
        return base.ModelDescription(
            capabilities=base.EMBEDDINGS,
            # SGLang refuses an input of `context_len` tokens or more.
            max_model_len=max(0, context - 1),
            embedding_dimensions=dimensions_of(answer),
            identity=identity,
        )

    async def max_model_len(self, engine: base.EngineHTTP) -> int:
        """From `/v1/models` (SGLang's `/model_info` has no context length). Readiness asks
        this before the adapter serves: `/model_info` tells, on the way, whether SGLang has
        a tool-call parser, and what it serves."""
        info = await engine.get_json("/model_info")
        if isinstance(info, dict):
            self._info = info
            self.tool_call_parser = str(info.get("tool_call_parser") or "")
        cards = (await engine.get_json("/v1/models") or {}).get("data") or []
        for card in cards:
            if card.get("id") == self.served_model_name and isinstance(
                card.get("max_model_len"), int
            ):
                return int(card["max_model_len"])
        return 0

    async def abort(self, engine: base.EngineHTTP, abort_id: str) -> None:
        await engine.post_json("/abort_request", {"rid": abort_id})
