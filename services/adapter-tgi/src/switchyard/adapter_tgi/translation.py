"""The TGI translation: the contract's requests onto TGI 3.3's HTTP API, and back.

Prompts go to the native `/generate` and `/generate_stream` (`details: true`: the last
stream event carries the finish reason, the token count and the prompt length); a unary
answer's prompt length is its `x-prompt-tokens` header, as `details.prefill` is empty
unless TGI runs with `--enable-prefill-logprobs`. Chat goes to `/v1/chat/completions`
(`model: "tgi"`, usage requested). TGI's traps handled here:
- its ranges are stricter: `top_p` must be < 1 (1 means off, so it is left out),
  `temperature` > 0 (0 means greedy: `do_sample: false`). TGI samples whenever a warper
  (`top_p`, `top_k`) is on, so a greedy request sends none; the native API is greedy
  unless asked to sample, so an unset temperature samples as the OpenAI API does;
- without `max_tokens` nothing is sent and TGI generates until EOS or the context is
  full (the project's one behaviour, on both routes); above 1024 it may run past
  `max_tokens` to the next multiple of 1024, so outputs are cut here (`budget`);
- what TGI lacks is refused, never dropped: `ignore_eos`,
  `presence_penalty`, and on its chat API `top_k` and `repetition_penalty`;
- structured outputs use its `grammar` / `response_format` shape `{type, value}`; JSON
  mode is a regex grammar (`json_object`): TGI's object schemas either list the keys or
  are refused;
- stop strings stay in TGI's output and are found only at token ends, so they are cut
  here (`stops`);
- `/generate_stream` reports every failure, overload included, as an event inside an
  HTTP 200 (`{"error", "error_type"}`), the chat stream as
  `{"error": {"message", "http_status_code": 422}}` whatever the cause;
- `--api-key` guards generation but not `/health` or `/info`, so readiness also proves
  the adapter's key on a guarded route (`max_model_len`).

Chat features (TGI 3.3, `router/src/lib.rs`, `chat.rs`, `infer/tool_grammar.rs`):
- tools are a JSON grammar, not a parser: TGI writes at most one call (no parallel calls),
  answers it with the id "0" and finish reason "stop", and streams it as `tool_calls`
  deltas of raw tokens with no chunk carrying a finish reason. Here every call gets its
  own id (`call_...`) and OpenAI's finish reason (`tool_calls`, or `stop` for a named
  function); a stream's comes with the usage chunk. `tool_choice` keeps its meaning: TGI's `auto` offers a `no_tool` function whose
  choice makes it answer in text, `required` and a named function always call; `none`
  sends no tools at all (TGI refuses tools beside a `response_format` even then). Tools
  with a `response_format` otherwise are refused. An assistant message's calls reach the
  template only when it has no content (TGI's message is one or the other): a message
  with both is refused;
- logprobs come as OpenAI's `content` list without `bytes` (computed here); EOS has an
  entry, dropped here, as it is no text; `top_logprobs` above `--max-top-n-tokens` is
  TGI's validation error;
- `n` does not exist (TGI reads and ignores it): the framework makes n calls;
- images go as `image_url` chunks. A text-only model reads them as markdown text, without
  error, so readiness asks `/tokenize` whether the model reads an image (its tokens then
  no longer spell the markdown), and a text-only model's requests with images are
  refused.

CountTokens: `/chat_tokenize` of the chat route's very body (TGI templates it with the
tools' prompt and reads its images as for generation) or `/tokenize` of a prompt; the count
is the number of tokens listed. Under `auto`, a model that picks `no_tool` makes TGI
generate again without tools and report that shorter prompt. Stop strings are found here
(`stops`), so the one that ended a choice is known (`stop_sequence`).

TGI serves chat and completions only: no embeddings route (TGI's sibling, TEI, serves
those), so Embed is refused before any engine call. The identity is `/info`'s `model_id`
and `model_sha` (the revision of the weights).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from switchyard.adapter import openai_stream
from switchyard.adapter import translation as base
from switchyard.adapter.validation import parse_json_schema
from switchyard.adapter_tgi.budget import Budget, may_overrun
from switchyard.adapter_tgi.json_object import JSON_OBJECT_REGEX
from switchyard.adapter_tgi.stops import StopTrimmer, cut_at_stop
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

_FINISH: Final[dict[str, base.FinishReason]] = {
    "length": pb.FINISH_REASON_LENGTH,
    "eos_token": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "stop": pb.FINISH_REASON_STOP,  # the chat API's name for eos_token
}
#: TGI's validation messages that mean "prompt plus completion do not fit".
_CONTEXT_MARKERS: Final = (
    "`inputs` tokens + `max_new_tokens` must be <=",
    "`inputs` must have less than",
)
_U64: Final = (1 << 64) - 1
TOKENIZE: Final = "/tokenize"
CHAT_TOKENIZE: Final = "/chat_tokenize"
#: A 1x1 PNG as markdown: what TGI's router makes of an `image_url` chunk.
IMAGE_PROBE: Final = (
    "![](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
    "2mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==)"
)


def _matched(trimmer: StopTrimmer, reason: base.FinishReason) -> str:
    """The stop string that ended a choice finishing with `reason` ("" unless STOP)."""
    return trimmer.matched if reason == pb.FINISH_REASON_STOP else ""


def _call_id() -> str:
    """An id for a call TGI made (TGI's own are "0" or a count, not unique)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _eos_dropped(
    logprobs: tuple[pb.TokenLogprob, ...], finish: object
) -> tuple[pb.TokenLogprob, ...]:
    """TGI lists EOS among the logprobs of an output it ended ("stop"); it is no text."""
    return logprobs[:-1] if finish == "stop" and logprobs else logprobs


def _greedy(s: pb.SamplingParams) -> bool:
    return s.HasField("temperature") and s.temperature == 0


def finish_reason(name: object) -> base.FinishReason:
    reason = _FINISH.get(name) if isinstance(name, str) else None
    if reason is None:
        raise InferenceError.engine_failed(f"TGI sent an unknown finish_reason {name!r}")
    return reason


def classify(message: str, error_type: str) -> InferenceError:
    """The contract's error for a TGI error message and `error_type`."""
    if error_type == "overloaded" or message.startswith("Model is overloaded"):
        return InferenceError.overloaded(f"TGI is overloaded: {message}")
    if error_type == "validation" or message.startswith("Input validation error"):
        if any(marker in message for marker in _CONTEXT_MARKERS):
            return InferenceError.context_length(message)
        return InferenceError.invalid(message)
    if error_type in ("template_error", "tool_error", "missing_template_variable") or (
        message.startswith(("Template error", "Tool error"))
    ):
        return InferenceError.invalid(message)
    return InferenceError.engine_failed(f"TGI failed: {message}")


def stream_error(data: dict[str, Any]) -> InferenceError:
    """An error event of either stream: native `{"error", "error_type"}` or chat `{"error": {...}}`."""
    error = data["error"]
    if isinstance(error, dict):
        return classify(str(error.get("message", "")), "")
    return classify(str(error), str(data.get("error_type", "")))


def _max_tokens(request: pb.GenerateRequest) -> int | None:
    s = request.sampling
    return s.max_tokens if s.HasField("max_tokens") else None


def _first_tokens(tokens: list[str], limit: int, generated: int) -> str:
    """The text of the first `limit` of an output's `generated` tokens (TGI ran past them)."""
    if len(tokens) != generated:
        raise InferenceError.engine_failed(
            f"TGI generated {generated} tokens past max_tokens ({limit}) without listing them"
        )
    return "".join(tokens[:limit])


def _prompt_tokens(headers: Mapping[str, str]) -> int:
    """The prompt's length from `/generate`'s `x-prompt-tokens` header.

    The body has it only as `details.prefill`, which is empty unless TGI was started with
    `--enable-prefill-logprobs` (and then costs a token entry per prompt token).
    """
    value = headers.get("x-prompt-tokens")
    if value is None:
        raise InferenceError.engine_failed("TGI sent no x-prompt-tokens header")
    return int(value)


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InferenceError.engine_failed(f"TGI sent an unexpected {what}")
    return body


def native_logprobs(tokens: Any, top_tokens: Any) -> tuple[pb.TokenLogprob, ...]:
    """Native `tokens` (`{id, text, logprob, special}`) and their `top_tokens` (a list per
    token, when `top_n_tokens` was set) as the contract's logprobs; special tokens (EOS)
    are no text and have none."""
    out = []
    tops = top_tokens if isinstance(top_tokens, list) else []
    for i, token in enumerate(tokens):
        if token["special"]:
            continue
        entry = pb.TokenLogprob(
            token=token["text"], logprob=float(token["logprob"]), bytes=token["text"].encode()
        )
        for alt in tops[i] if i < len(tops) else ():
            entry.top_logprobs.add(
                token=alt["text"], logprob=float(alt["logprob"]), bytes=alt["text"].encode()
            )
        out.append(entry)
    return tuple(out)


class NativeStreamParser(base.StreamParser):
    """`/generate_stream`: one event per token, the last one with `details`."""

    def __init__(
        self, stops: list[str], max_tokens: int | None = None, *, logprobs: bool = False
    ) -> None:
        self._trimmer = StopTrimmer(stops)
        self._budget = Budget(max_tokens)
        self._reason: base.FinishReason = pb.FINISH_REASON_LENGTH
        self._logprobs = logprobs

    def feed(self, event: str, data: Any) -> base.Delta | None:
        data = _object(data, "stream event")
        if "error" in data:
            raise stream_error(data)
        try:
            token = data["token"]
            text = "" if token["special"] else token["text"]
            details = data.get("details")
        except (KeyError, TypeError):
            raise InferenceError.engine_failed("TGI sent a stream event without a token") from None
        if details is None and data.get("generated_text") is not None:
            raise InferenceError.engine_failed("TGI's last stream event has no details")
        if self._budget.spent:  # TGI's surplus past max_tokens; the last event ends the call
            return None if details is None else self._surplus_end(details)
        logprobs: tuple[pb.TokenLogprob, ...] = ()
        if self._logprobs:
            try:
                logprobs = native_logprobs([token], [data.get("top_tokens") or []])
            except (KeyError, TypeError, ValueError):
                raise InferenceError.engine_failed("TGI sent a malformed token") from None
        last_allowed = self._budget.take()
        was_stopped = self._trimmer.stopped
        out = self._trimmer.push(text)
        if details is None:
            if last_allowed:  # max_tokens reached, though TGI goes on
                out += self._trimmer.flush()
                self._reason = pb.FINISH_REASON_STOP if self._trimmer.stopped else self._reason
                return base.Delta(
                    text=out, token_count=1, finish_reason=self._reason, logprobs=logprobs,
                    stop_sequence=_matched(self._trimmer, self._reason),
                )  # fmt: skip
            just_stopped = self._trimmer.stopped and not was_stopped
            reason = pb.FINISH_REASON_STOP if just_stopped else pb.FINISH_REASON_UNSPECIFIED
            return base.Delta(
                text=out, token_count=1, finish_reason=reason, logprobs=logprobs,
                stop_sequence=_matched(self._trimmer, reason),
            )  # fmt: skip
        try:
            reason = finish_reason(details["finish_reason"])
            out += self._trimmer.flush()
            if self._trimmer.stopped:
                reason = pb.FINISH_REASON_STOP
            return base.Delta(
                text=out,
                token_count=1,
                finish_reason=reason,
                prompt_tokens=int(details["input_length"]),
                completion_tokens=self._budget.cap(int(details["generated_tokens"])),
                logprobs=logprobs,
                stop_sequence=_matched(self._trimmer, reason),
            )
        except (KeyError, TypeError, ValueError):
            raise InferenceError.engine_failed("TGI sent malformed stream details") from None

    def _surplus_end(self, details: Any) -> base.Delta:
        try:
            return base.Delta(
                finish_reason=self._reason,
                stop_sequence=_matched(self._trimmer, self._reason),
                prompt_tokens=int(details["input_length"]),
                completion_tokens=self._budget.cap(int(details["generated_tokens"])),
            )
        except (KeyError, TypeError, ValueError):
            raise InferenceError.engine_failed("TGI sent malformed stream details") from None


class ChatStreamParser(base.StreamParser):
    """`/v1/chat/completions` streamed: one chunk per token, then a usage chunk, then `[DONE]`.

    A tool call's chunks carry `tool_calls` deltas and none a finish reason: the usage
    chunk (always asked for) ends the call with `tool_calls`.
    """

    def __init__(
        self, stops: list[str], max_tokens: int | None = None, *, logprobs: bool = False,
        call_finish: base.FinishReason = pb.FINISH_REASON_TOOL_CALLS,
    ) -> None:  # fmt: skip
        self._trimmer = StopTrimmer(stops)
        self._budget = Budget(max_tokens)
        self._logprobs = logprobs
        self._call_finish = call_finish
        self._call_id: str | None = None
        self._finished = False

    def feed(self, event: str, data: Any) -> base.Delta | None:
        data = _object(data, "stream event")
        if "error" in data:
            raise stream_error(data)
        usage = data.get("usage")
        prompt_tokens = completion_tokens = None
        if isinstance(usage, dict):
            try:
                prompt_tokens = int(usage["prompt_tokens"])
                completion_tokens = self._budget.cap(int(usage["completion_tokens"]))
            except (KeyError, TypeError, ValueError):
                raise InferenceError.engine_failed("TGI sent malformed usage") from None
        choices = data.get("choices") or []
        if not choices or self._budget.spent:  # a usage chunk, or TGI's surplus past max_tokens
            if prompt_tokens is None:
                return None
            reason: base.FinishReason = pb.FINISH_REASON_UNSPECIFIED
            if not self._finished:  # a tool call's stream: no chunk said why it ended
                self._finished = True
                reason = self._call_finish if self._call_id else pb.FINISH_REASON_LENGTH
            return base.Delta(
                finish_reason=reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        last_allowed = self._budget.take()
        try:
            choice = choices[0]
            delta = choice["delta"]
            content = delta.get("content") or ""
            finish = choice.get("finish_reason")
            calls = self._tool_calls(delta.get("tool_calls"))
        except (KeyError, TypeError, AttributeError, IndexError):
            raise InferenceError.engine_failed("TGI sent a malformed chat chunk") from None
        logprobs: tuple[pb.TokenLogprob, ...] = ()
        if self._logprobs:
            logprobs = _eos_dropped(openai_stream.chat_logprobs(choice.get("logprobs")), finish)
        if calls:
            reason = finish_reason(finish) if finish else pb.FINISH_REASON_UNSPECIFIED
            if last_allowed and not finish:
                reason = pb.FINISH_REASON_LENGTH
            self._finished = self._finished or bool(reason)
            return base.Delta(
                token_count=1, finish_reason=reason, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, tool_calls=calls, logprobs=logprobs,
            )  # fmt: skip
        was_stopped = self._trimmer.stopped
        out = self._trimmer.push(content)
        reason = pb.FINISH_REASON_UNSPECIFIED
        if finish:
            reason = finish_reason(finish)
            out += self._trimmer.flush()
        elif last_allowed:  # max_tokens reached, though TGI goes on
            reason = pb.FINISH_REASON_LENGTH
            out += self._trimmer.flush()
        if self._trimmer.stopped and (finish or last_allowed or not was_stopped):
            reason = pb.FINISH_REASON_STOP
        self._finished = self._finished or bool(reason)
        return base.Delta(
            text=out,
            token_count=1,
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            logprobs=logprobs,
            stop_sequence=_matched(self._trimmer, reason),
        )

    def _tool_calls(self, raw: Any) -> tuple[pb.ToolCallDelta, ...]:
        """TGI's `tool_calls` delta (one call, its id and type on every chunk, the name on
        the first) as the contract's: our id and the name on the first fragment only."""
        if not raw:
            return ()
        function = raw[0]["function"]
        arguments = function.get("arguments") or ""
        if self._call_id is None:
            self._call_id = _call_id()
            name = str(function.get("name") or "")
            return (
                pb.ToolCallDelta(index=0, id=self._call_id, name=name, arguments_delta=arguments),
            )
        return (pb.ToolCallDelta(index=0, arguments_delta=arguments),) if arguments else ()


class TgiTranslation(base.Translation):
    engine = "tgi"
    features = frozenset({"tools", "images", "logprobs", "n"})
    native_n = False  # the chat API reads `n` and ignores it
    health_path = "/health"
    load_metrics = base.LoadMetrics(running="tgi_batch_current_size", waiting="tgi_queue_size")

    def __init__(self, served_model_name: str) -> None:
        super().__init__(served_model_name)
        #: Whether the model reads images (None: not known yet; see `max_model_len`).
        self.reads_images: bool | None = None
        #: What `/info` says of the weights ("": not read yet).
        self._identity = ""

    # Requests.
    def request(self, request: pb.GenerateRequest, *, stream: bool) -> base.EngineRequest:
        s = request.sampling
        if s.ignore_eos:
            raise InferenceError.unsupported(
                "TGI's HTTP API cannot ignore the end-of-sequence token", "ignore_eos"
            )
        if s.HasField("presence_penalty") and s.presence_penalty != 0:
            raise InferenceError.unsupported("TGI has no presence_penalty", "presence_penalty")
        grammar = self._grammar(request)
        if request.WhichOneof("input") == "chat":
            return base.EngineRequest("/v1/chat/completions", self._chat(request, stream, grammar))
        return base.EngineRequest(
            "/generate_stream" if stream else "/generate", self._native(request, stream, grammar)
        )

    def _grammar(self, request: pb.GenerateRequest) -> dict[str, Any] | None:
        if not request.HasField("structured_output"):
            return None
        so = request.structured_output
        kind = so.WhichOneof("kind")
        if kind == "json_schema":
            return {"type": "json", "value": parse_json_schema(so.json_schema)}
        if kind == "json_object":
            # Not a schema: TGI's only object schemas either list the keys or are refused.
            return {"type": "regex", "value": JSON_OBJECT_REGEX}
        if kind == "regex":
            return {"type": "regex", "value": so.regex}
        if kind == "choice":
            return {"type": "regex", "value": base.choice_regex(so.choice.choices)}
        raise InferenceError.unsupported(f"unknown constraint kind {kind!r}", "structured_output")

    def _native(
        self, request: pb.GenerateRequest, stream: bool, grammar: dict[str, Any] | None
    ) -> dict[str, Any]:
        s = request.sampling
        params: dict[str, Any] = {"details": True}
        if s.HasField("max_tokens"):
            params["max_new_tokens"] = s.max_tokens
        if _greedy(s):
            # Any warper (top_p, top_k) would make TGI sample even with do_sample off, and
            # greedy decoding picks the top token whatever they would have cut.
            params["do_sample"] = False
        else:
            params["do_sample"] = True
            if s.HasField("temperature"):
                params["temperature"] = s.temperature
            if s.HasField("top_p") and s.top_p < 1:
                params["top_p"] = s.top_p
            if s.HasField("top_k"):
                params["top_k"] = s.top_k
        if s.HasField("repetition_penalty") and s.repetition_penalty != 1:
            params["repetition_penalty"] = s.repetition_penalty
        if request.logprobs.top_logprobs:
            params["top_n_tokens"] = request.logprobs.top_logprobs
        self._common(s, params)
        if grammar is not None:
            params["grammar"] = grammar
        return {"inputs": request.prompt, "parameters": params}

    def _chat(
        self, request: pb.GenerateRequest, stream: bool, grammar: dict[str, Any] | None
    ) -> dict[str, Any]:
        s = request.sampling
        if s.HasField("top_k"):
            raise InferenceError.unsupported("TGI's chat API has no top_k", "top_k")
        if s.HasField("repetition_penalty") and s.repetition_penalty != 1:
            raise InferenceError.unsupported(
                "TGI's chat API has no repetition_penalty", "repetition_penalty"
            )
        if base.uses_images(request) and self.reads_images is False:
            raise base.unsupported_feature(
                "the model TGI serves reads no images (it would take them as text)", "messages"
            )
        messages = [_chat_message(m) for m in request.chat.messages]
        body: dict[str, Any] = {"model": "tgi", "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if s.HasField("max_tokens"):
            body["max_tokens"] = s.max_tokens
            if not stream and may_overrun(s.max_tokens):
                body["logprobs"] = True  # the tokens, to cut TGI's output at max_tokens
        if s.HasField("temperature"):
            body["temperature"] = s.temperature  # TGI's chat API reads 0 as greedy itself
        if s.HasField("top_p") and s.top_p < 1 and not _greedy(s):
            body["top_p"] = s.top_p  # with temperature 0 it would make TGI sample
        self._common(s, body)
        if request.HasField("logprobs"):
            body["logprobs"] = True
            if request.logprobs.top_logprobs:
                body["top_logprobs"] = request.logprobs.top_logprobs
        if _calls_tools(request):
            if grammar is not None:
                raise base.unsupported_feature(
                    "TGI cannot constrain an output to tools and to a response format at once",
                    "tools",
                )
            body["tools"] = [_tool(t) for t in request.tools]
            choice = base.tool_choice_json(request)
            if choice is not None:
                body["tool_choice"] = choice
        if grammar is not None:
            body["response_format"] = grammar
        return body

    @staticmethod
    def _common(s: pb.SamplingParams, out: dict[str, Any]) -> None:
        if s.HasField("seed"):
            out["seed"] = s.seed & _U64  # TGI's seed is a u64; keep negative seeds distinct
        if s.stop:
            out["stop"] = list(s.stop)
        if s.HasField("frequency_penalty") and s.frequency_penalty != 0:
            out["frequency_penalty"] = s.frequency_penalty

    # Responses.
    def completion(
        self, request: pb.GenerateRequest, body: Any, headers: Mapping[str, str] = base.NO_HEADERS
    ) -> base.Completion:
        stops = list(request.sampling.stop)
        limit = _max_tokens(request)
        body = _object(body, "response")
        try:
            calls: tuple[base.ToolCall, ...] = ()
            logprobs: tuple[pb.TokenLogprob, ...] = ()
            if request.WhichOneof("input") == "chat":
                choice = body["choices"][0]
                message = choice["message"]
                text = message.get("content") or ""
                reason = finish_reason(choice["finish_reason"])
                usage = body["usage"]
                prompt_tokens = int(usage["prompt_tokens"])
                completion_tokens = int(usage["completion_tokens"])
                if request.HasField("logprobs"):
                    listed_logprobs = openai_stream.chat_logprobs(choice.get("logprobs"))
                    logprobs = _eos_dropped(listed_logprobs, choice["finish_reason"])
                calls = tuple(
                    base.ToolCall(_call_id(), c.name, c.arguments)
                    for c in openai_stream.tool_calls(message.get("tool_calls"))
                )
                if limit is not None and completion_tokens > limit:
                    listed = (choice.get("logprobs") or {}).get("content", [])
                    text = _first_tokens([t["token"] for t in listed], limit, completion_tokens)
                    logprobs = logprobs[:limit]
            else:
                text = body["generated_text"]
                details = body["details"]
                reason = finish_reason(details["finish_reason"])
                completion_tokens = int(details["generated_tokens"])
                prompt_tokens = _prompt_tokens(headers)
                tokens = details["tokens"]
                if limit is not None and completion_tokens > limit:
                    listed = [t["text"] if not t["special"] else "" for t in tokens]
                    text = _first_tokens(listed, limit, completion_tokens)
                    tokens = tokens[:limit]
                if request.HasField("logprobs"):
                    logprobs = native_logprobs(tokens, details.get("top_tokens"))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise InferenceError.engine_failed("TGI sent a malformed response") from None
        if limit is not None and completion_tokens > limit:  # TGI ran past max_tokens
            reason, completion_tokens = pb.FINISH_REASON_LENGTH, limit
        text, matched = cut_at_stop(text, stops)
        if matched:
            reason = pb.FINISH_REASON_STOP
        if calls and reason == pb.FINISH_REASON_STOP:  # TGI says "stop" after a call
            reason = _call_finish(request)
        choice = base.Choice(
            text=text, finish_reason=reason, tool_calls=calls, logprobs=logprobs,
            stop_sequence="" if calls else matched,
        )  # fmt: skip
        return base.Completion(
            choices=(choice,), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )

    def stream_parser(self, request: pb.GenerateRequest) -> base.StreamParser:
        stops = list(request.sampling.stop)
        if request.WhichOneof("input") == "chat":
            return ChatStreamParser(
                stops, _max_tokens(request), logprobs=request.HasField("logprobs"),
                call_finish=_call_finish(request),
            )  # fmt: skip
        return NativeStreamParser(
            stops, _max_tokens(request), logprobs=request.HasField("logprobs")
        )

    def error(self, status: int, body: bytes) -> InferenceError:
        message, error_type = body.decode("utf-8", "replace")[:2000], ""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None  # axum's rejections are plain text
        if isinstance(parsed, dict) and "error" in parsed:
            if isinstance(parsed["error"], dict):
                message = str(parsed["error"].get("message", message))
            else:
                message = str(parsed["error"])
                error_type = str(parsed.get("error_type", ""))
        if status == 429:
            return InferenceError.overloaded(f"TGI is overloaded: {message}")
        if status == 503:
            return InferenceError.unavailable(f"TGI is unavailable: {message}")
        if status in (400, 413, 415, 422):  # validation, or axum refusing the body
            return classify(message, error_type or "validation")
        if error_type:  # 424 generation, 500 incomplete_generation
            return classify(message, error_type)
        return InferenceError.engine_failed(f"TGI answered HTTP {status}: {message}")

    def count_request(self, request: pb.GenerateRequest) -> base.EngineRequest:
        """A chat: `/chat_tokenize` of the very body the chat route gets (TGI templates it
        with its tools' prompt and expands its images as for generation, `try_into_generate`);
        a prompt: `/tokenize` of `inputs`. One count for any `n` (every call reads the
        same prompt). Under `auto`, a model that picks `no_tool` makes TGI generate again
        without the tools, and that second prompt (shorter) is the usage it reports."""
        if request.WhichOneof("input") == "chat":
            call = self.request(request, stream=False)
            return base.EngineRequest(CHAT_TOKENIZE, call.body)
        return base.EngineRequest(TOKENIZE, {"inputs": request.prompt})

    def token_count(self, request: pb.GenerateRequest, body: Any) -> int:
        tokens = body.get("tokenize_response") if isinstance(body, dict) else body
        if not isinstance(tokens, list):
            raise InferenceError.engine_failed("TGI's tokenize answer is not a list of tokens")
        return len(tokens)

    async def max_model_len(self, engine: base.EngineHTTP) -> int:
        """`/info`'s `max_total_tokens`, once the adapter's credentials are known to work.

        Readiness asks this before the adapter serves. TGI's `--api-key` guards only the
        generation routes (`/health` and `/info` stay open), so a missing or wrong key
        would otherwise pass readiness and fail every request: prove it first on
        `/tokenize`, guarded like generation and as cheap as a request gets.
        """
        info = await engine.get_json("/info")
        try:
            tokens = await engine.post_json("/tokenize", {"inputs": IMAGE_PROBE})
        except base.EngineHTTPError as exc:
            if exc.status is None or exc.credentials_refused:  # not reached, or the key refused
                raise exc.on_route("POST /tokenize") from None
            # Anything else (a model without a tokenizer, ...) says the key was accepted.
        else:
            self.reads_images = _reads_images(tokens)
        self._identity = _identity(info)
        return int(info["max_total_tokens"])

    async def describe(self, engine: base.EngineHTTP) -> base.ModelDescription:
        """Chat and completions (TGI serves no embeddings); the identity from `/info`."""
        context = await self.max_model_len(engine)
        return base.ModelDescription(base.GENERATION, context, identity=self._identity)


def _identity(info: Any) -> str:
    """`tgi:<model_id>@<model_sha>` from `/info` (without the sha where TGI has none: a
    local path); "" without a model id."""
    model_id = info.get("model_id") if isinstance(info, dict) else None
    if not isinstance(model_id, str) or not model_id:
        return ""
    sha = info.get("model_sha")
    return f"tgi:{model_id}@{sha}" if isinstance(sha, str) and sha else f"tgi:{model_id}"


def _reads_images(tokens: Any) -> bool:
    """Whether `/tokenize` of `IMAGE_PROBE` read an image: a text-only model's tokens spell
    the markdown back; a vision model's image tokens do not (their offsets are in the text
    it tokenized, images expanded)."""
    if not isinstance(tokens, list):
        return True  # not TGI's answer: let the engine decide
    spelled = "".join(t.get("text", "") for t in tokens if isinstance(t, dict))
    return spelled != IMAGE_PROBE


def _call_finish(request: pb.GenerateRequest) -> base.FinishReason:
    """How a call ends, as OpenAI (and vLLM) say it: "stop" when the function was named,
    "tool_calls" when the model chose to call."""
    if request.tool_choice.WhichOneof("kind") == "function":
        return pb.FINISH_REASON_STOP
    return pb.FINISH_REASON_TOOL_CALLS


def _calls_tools(request: pb.GenerateRequest) -> bool:
    """Whether the request offers TGI tools: with `tool_choice: none` it does not, as TGI
    then neither lists them to the model nor constrains the output."""
    choice = request.tool_choice
    none = choice.WhichOneof("kind") == "mode" and choice.mode == pb.TOOL_CHOICE_MODE_NONE
    return bool(request.tools) and not none


def _tool(tool: pb.Tool) -> dict[str, Any]:
    """A tool as TGI reads it: the parameters under TGI's own name, `arguments` (its
    document knows no alias `parameters`), and required (none: an empty object)."""
    parameters = orjson.loads(tool.parameters) if tool.parameters else None
    function: dict[str, Any] = {
        "name": tool.name,
        "arguments": parameters or {"type": "object", "properties": {}},
    }
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _arguments(text: str) -> Any:
    """A call's arguments as the object they are (TGI writes a string's value back quoted)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _chat_message(m: pb.ChatMessage) -> dict[str, Any]:
    """A message as TGI reads it: an assistant's calls without `content`, since TGI's
    message is either content or calls (with both, it reads the content alone)."""
    message = base.chat_message(m)
    if not m.tool_calls:
        return message
    if message.pop("content", None):
        raise base.unsupported_feature(
            "TGI cannot read an assistant message with both content and tool calls", "messages"
        )
    message["tool_calls"] = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": _arguments(c.arguments)},
        }
        for c in m.tool_calls
    ]
    return message
