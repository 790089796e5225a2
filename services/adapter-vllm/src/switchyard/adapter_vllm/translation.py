"""The vLLM translation: canonical requests to vLLM's OpenAI routes, and back.

Prompts go to `/v1/completions`, chats to `/v1/chat/completions`. Constraints travel as
`structured_outputs` (never the removed `guided_*` fields, which vLLM silently ignores).
Streams always ask for usage in every chunk (`continuous_usage_stats`), so each delta's
token count is the difference of the engine's own cumulative counts.

A request without `max_tokens` generates until a stop or a full context (the contract's
policy). vLLM has no field that says so on completions: absent and `null` both mean 16
(`CompletionRequest.normalize_null_max_tokens`), and chat's absent limit falls back to the
model's `generation_config.json`. So the adapter always sends a limit: the engine's
`max_model_len` (read from `/v1/models` before the adapter is ready), which vLLM accepts
(it refuses only a limit above `max_model_len`) and clamps to what the prompt leaves
(`serve/utils/api_utils.py:get_max_tokens`).

The chat surface is OpenAI's, as vLLM 0.33.0 reads it: `tools`, `tool_choice`,
`parallel_tool_calls`, content parts with `image_url`, `n`, chat `logprobs: true` with
`top_logprobs`, completions `logprobs: <int>` (answered in the legacy `tokens` /
`token_logprobs` / `top_logprobs` format, the chosen token listed among the alternatives).
Reasoning comes back as `reasoning` (vLLM renamed `reasoning_content`). A forced named tool
finishes "stop" (as OpenAI's does); calls made otherwise finish "tool_calls". What the
server was not started for is a 400 naming the flag (`--enable-auto-tool-choice`,
`--tool-call-parser`), or "... is not a multimodal model": UNSUPPORTED_FEATURE here.

Embeddings (a model started with `--runner pooling`) go to `/v1/embeddings`, every input of
a request in one call, as `encoding_format: "base64"` with `embed_dtype: "float32"` and
`endianness: "little"` (vLLM's default endianness is the host's): the exact float32 values
the engine computed. What the model serves is read from which routes vLLM registered (it
registers its generation routes only for generation runners, `/v1/embeddings` only for
embedding models; an unregistered route answers 404 `{"detail": "Not Found"}`): a
deliberately empty body on `/v1/completions` is refused by its validation (400) if the
route exists, and one small embedding on `/v1/embeddings` both proves that route and gives
the vector size (no route tells it). `dimensions` is checked by vLLM against the model's
`is_matryoshka` / `matryoshka_dimensions` (`PoolingParams.verify`); its refusals are
UNSUPPORTED_FEATURE (not a Matryoshka model) or INVALID_REQUEST (a size it does not take).
The identity is the models card's `root` (the weights' path or hub id).

CountTokens asks `POST /tokenize` (`entrypoints/serve/tokenize/`), in the chat form with the
chat route's messages and tools (the same renderer: template, tools, images expanded by the
multimodal processor) or the prompt form; its answer's `count` is the generation's
`prompt_tokens`. A stop string that ended a choice is its `stop_reason` (a string; an int
is a stop token id, null EOS), unary and on the stream's finishing chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import grpc
import orjson

from switchyard.adapter import translation as base
from switchyard.adapter.openai_embeddings import dimensions_of, inputs_json, read_embeddings
from switchyard.adapter.openai_stream import OpenAIStream, chat_completion, text_completion
from switchyard.adapter.validation import parse_json_schema
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

COMPLETIONS: Final = "/v1/completions"
CHAT_COMPLETIONS: Final = "/v1/chat/completions"
MODELS: Final = "/v1/models"
EMBEDDINGS: Final = "/v1/embeddings"
TOKENIZE: Final = "/tokenize"
#: Where a choice says which stop ended it: a string is a stop string, an int a token id.
_STOP_KEY: Final = "stop_reason"
#: What a readiness probe embeds to learn the vector size.
_PROBE_TEXT: Final = "switchyard"
#: Routes vLLM did not register answer 404; registered ones refuse an empty body with 400.
_NOT_REGISTERED: Final = 404

_FINISH: Final[dict[str, base.FinishReason]] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    # vLLM ends a sequence early when it detects a repetition loop: a natural stop.
    "repetition": pb.FINISH_REASON_STOP,
    # vLLM reports "tool_calls" when the choice called tools on its own (auto, required);
    # a forced named call finishes "stop", as OpenAI's does.
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
_SAMPLING_FIELDS: Final = (
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
# Texts of vLLM's context-overflow errors (`renderers/params.py`): params and a phrase.
_CONTEXT_PARAMS: Final = frozenset({"input_tokens", "input_text"})
_CONTEXT_PHRASE: Final = "maximum context length"
#: vLLM's 400s for a feature the server was not started for: tool choice without
#: --enable-auto-tool-choice / --tool-call-parser (`renderers/online_renderer.py`), and
#: image input to a text-only model (`multimodal/registry.py:create_processor`).
_UNSUPPORTED: Final = re.compile(
    r"tool choice requires --enable-auto-tool-choice"
    r"|requires --tool-call-parser to be set"
    r"|is not a multimodal model"
)
#: vLLM's refusals of `dimensions` (`pooling_params.py:_set_default_parameters`): a model
#: that is not Matryoshka, and a size out of its range or not among its sizes.
_NOT_MATRYOSHKA: Final = re.compile(r"does not support Matryoshka")
_BAD_DIMENSIONS: Final = re.compile(
    r"only supports dimensions in range|only supports Matryoshka dimensions"
)
#: The reasoning field of a message or delta (vLLM 0.33 renamed `reasoning_content`).
_REASONING_KEYS: Final = ("reasoning",)


def _finish_reason(reason: str) -> base.FinishReason:
    mapped = _FINISH.get(reason)
    if mapped is not None:
        return mapped
    if reason == "abort":
        raise InferenceError.unavailable("the engine aborted the request")
    if reason == "error":
        raise InferenceError.engine_failed("the engine failed while generating")
    raise InferenceError.engine_failed(f"the engine sent an unknown finish reason {reason!r}")


def _structured_outputs(so: pb.StructuredOutput) -> dict[str, Any]:
    """vLLM's `structured_outputs` for a (validated) canonical constraint."""
    kind = so.WhichOneof("kind")
    if kind == "json_schema":
        return {"json": parse_json_schema(so.json_schema)}
    if kind == "json_object":
        return {"json_object": True}
    if kind == "regex":
        return {"regex": so.regex}
    if kind == "choice":
        return {"choice": list(so.choice.choices)}
    raise InferenceError.unsupported(
        f"structured output kind {kind!r} is not supported by vLLM", "structured_output"
    )


def _error_from(status: int, message: str, param: str | None) -> InferenceError:
    """The contract's error for a vLLM error status, message and param."""
    if status == 400:
        if param in _CONTEXT_PARAMS or _CONTEXT_PHRASE in message:
            return InferenceError.context_length(message)
        if _UNSUPPORTED.search(message):
            return base.unsupported_feature(message, param)
        if _NOT_MATRYOSHKA.search(message):
            return base.unsupported_feature(message, "dimensions")
        if _BAD_DIMENSIONS.search(message):
            return InferenceError.invalid(message, "dimensions")
        return InferenceError.invalid(message, param)
    if status in (422, 413):
        return InferenceError.invalid(message, param)
    if status == 404:
        return InferenceError(
            grpc.StatusCode.NOT_FOUND, pb.MODEL_NOT_FOUND, message, {"param": param or "model"}
        )
    if status in (429, 503):
        return InferenceError.overloaded(message)
    if status == 501:
        return InferenceError.unsupported(message, param)
    if status in (502, 504):
        return InferenceError.unavailable(message)
    if status >= 500:
        return InferenceError.engine_failed(message)
    # 401/403 (a wrong --api-key) and anything unexpected: the adapter's setup is at fault.
    return InferenceError.engine_failed(
        f"the engine refused the request (HTTP {status}): {message}"
    )


def _error_fields(payload: Any) -> tuple[int | None, str, str | None]:
    """(code, message, param) of vLLM's `{"error": {...}}`; also its 401 `{"error": "..."}`."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        param = error.get("param")
        return (
            code if isinstance(code, int) else None,
            str(error.get("message") or error.get("type") or "engine error"),
            param if isinstance(param, str) else None,
        )
    if isinstance(error, str):
        return None, error, None
    return None, "engine error", None


def _stream_error(data: dict[str, Any]) -> InferenceError:
    code, message, param = _error_fields(data)
    return _error_from(code or 500, message, param)


class VllmTranslation(base.Translation):
    engine = "vllm"
    features = base.FEATURES
    load_metrics = base.LoadMetrics(
        running="vllm:num_requests_running",
        waiting="vllm:num_requests_waiting",
        kv_cache_usage="vllm:kv_cache_usage_perc",
    )

    def __init__(self, served_model_name: str) -> None:
        super().__init__(served_model_name)
        #: The engine's context length, once `max_model_len` has read it (0: not yet).
        self._context = 0
        #: Why it could not be read, for the error of a request that needs it.
        self._context_unknown = "the engine's model info has not been read yet"
        #: The served card's `root` (the weights), once `max_model_len` has read it.
        self._root = ""

    def _output_limit(self, s: pb.SamplingParams) -> int:
        """The caller's `max_tokens`, or the whole context, which vLLM clamps to what is left."""
        if s.HasField("max_tokens"):
            return s.max_tokens
        if not self._context:
            # Sending nothing would stop a completion at vLLM's 16 tokens: refuse instead.
            raise InferenceError.unavailable(
                f"the engine's context length is not known, so a request without max_tokens "
                f"cannot be sized: {self._context_unknown}"
            )
        return self._context

    def request(self, request: pb.GenerateRequest, *, stream: bool) -> base.EngineRequest:
        chat = request.WhichOneof("input") == "chat"
        body: dict[str, Any] = {"model": self.served_model_name}
        if chat:
            body["messages"] = base.chat_messages(request)
        else:
            body["prompt"] = request.prompt
        s = request.sampling
        # Chat deprecates max_tokens for max_completion_tokens; completions has only it.
        body["max_completion_tokens" if chat else "max_tokens"] = self._output_limit(s)
        for name in _SAMPLING_FIELDS:
            if s.HasField(name):
                body[name] = getattr(s, name)
        if s.stop:
            body["stop"] = list(s.stop)
        if s.ignore_eos:
            body["ignore_eos"] = True
        if request.HasField("structured_output"):
            body["structured_outputs"] = _structured_outputs(request.structured_output)
        if chat:
            base.add_tools(body, request)
        n = base.choice_count(request)
        if n > 1:
            body["n"] = n
        if base.wants_logprobs(request):
            top = request.logprobs.top_logprobs
            if chat:
                body["logprobs"] = True
                body["top_logprobs"] = top
            else:  # completions: the number of alternatives (vLLM adds the chosen token)
                body["logprobs"] = top
        if request.request_id:
            body["request_id"] = request.request_id
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        return base.EngineRequest(CHAT_COMPLETIONS if chat else COMPLETIONS, body)

    def completion(
        self, request: pb.GenerateRequest, body: Any, headers: Mapping[str, str] = base.NO_HEADERS
    ) -> base.Completion:
        if request.WhichOneof("input") == "chat":
            return chat_completion(
                body,
                finish_reason=_finish_reason,
                reasoning_keys=_REASONING_KEYS,
                stop_key=_STOP_KEY,
            )
        return text_completion(
            body,
            finish_reason=_finish_reason,
            top_logprobs=request.logprobs.top_logprobs,
            stop_key=_STOP_KEY,
        )

    def stream_parser(self, request: pb.GenerateRequest) -> base.StreamParser:
        return OpenAIStream(
            chat=request.WhichOneof("input") == "chat",
            finish_reason=_finish_reason,
            error=_stream_error,
            reasoning_keys=_REASONING_KEYS,
            top_logprobs=request.logprobs.top_logprobs if base.wants_logprobs(request) else None,
            stop_key=_STOP_KEY,
        )

    def count_request(self, request: pb.GenerateRequest) -> base.EngineRequest:
        """`/tokenize` in the form of the generation route: a chat (`TokenizeChatRequest`)
        with its tools and the generation prompt, rendered by the same chat template and
        multimodal processor as `/v1/chat/completions` (images expanded to their tokens);
        a prompt (`TokenizeCompletionRequest`) with the special tokens `/v1/completions`
        adds. The chat route's defaults (`add_special_tokens` false, no template kwargs)
        are `/tokenize`'s own."""
        body: dict[str, Any] = {"model": self.served_model_name}
        if request.WhichOneof("input") == "chat":
            body["messages"] = base.chat_messages(request)
            if request.tools:
                # vLLM lists the tools to the template whatever the tool_choice (unless
                # started with --exclude-tools-when-tool-choice-none).
                body["tools"] = base.tools_json(request)
            body["add_generation_prompt"] = True
        else:
            body["prompt"] = request.prompt
        return base.EngineRequest(TOKENIZE, body)

    def token_count(self, request: pb.GenerateRequest, body: Any) -> int:
        count = body.get("count") if isinstance(body, dict) else None
        if not isinstance(count, int) or count < 0:
            raise InferenceError.engine_failed("the engine's /tokenize answer has no count")
        return count

    def error(self, status: int, body: bytes) -> InferenceError:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if payload is None:
            text = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
            return _error_from(status, text, None)
        _, message, param = _error_fields(payload)
        return _error_from(status, message, param)

    def embed_request(self, request: pb.EmbedRequest) -> base.EngineRequest:
        body = self._embedding_body(inputs_json(request))
        if request.HasField("dimensions"):
            body["dimensions"] = request.dimensions
        if request.request_id:
            body["request_id"] = request.request_id
        return base.EngineRequest(EMBEDDINGS, body)

    def _embedding_body(self, inputs: list[str] | list[list[int]]) -> dict[str, Any]:
        # Base64 of float32, little-endian whatever the host: the engine's exact values.
        return {
            "model": self.served_model_name,
            "input": inputs,
            "encoding_format": "base64",
            "embed_dtype": "float32",
            "endianness": "little",
        }

    def embeddings(self, request: pb.EmbedRequest, body: Any) -> base.Embeddings:
        return read_embeddings(body, len(request.inputs))

    async def describe(self, engine: base.EngineHTTP) -> base.ModelDescription:
        """The card (context length, identity; it also proves the adapter's key), then what
        the model serves, from the routes vLLM registered for it."""
        context = await self.max_model_len(engine)
        capabilities: set[base.Capability] = set()
        if await self._registered(engine, COMPLETIONS, {}):
            capabilities |= base.GENERATION
        dimensions = await self._embedding_dimensions(engine)
        if dimensions is not None:
            capabilities |= base.EMBEDDINGS
        return base.ModelDescription(
            capabilities=frozenset(capabilities),
            max_model_len=context,
            embedding_dimensions=dimensions or 0,
            identity=f"vllm:{self._root}" if self._root else "",
        )

    async def _embedding_dimensions(self, engine: base.EngineHTTP) -> int | None:
        """The vector size, from one small embedding; None when vLLM serves no embeddings."""
        body = self._embedding_body([_PROBE_TEXT])
        try:
            answer = await engine.post_json(EMBEDDINGS, body)
        except base.EngineHTTPError as exc:
            if exc.status == _NOT_REGISTERED:
                return None
            raise exc.on_route(f"POST {EMBEDDINGS}") from None
        return dimensions_of(answer)

    @staticmethod
    async def _registered(engine: base.EngineHTTP, path: str, body: Any) -> bool:
        """Whether vLLM registered `path`: 404 if not, its validation's 400 for `body` if so."""
        try:
            await engine.post_json(path, body)
        except base.EngineHTTPError as exc:
            if exc.status == _NOT_REGISTERED:
                return False
            if exc.status in (400, 422):
                return True
            raise exc.on_route(f"POST {path}") from None
        return True

    async def max_model_len(self, engine: base.EngineHTTP) -> int:
        """`max_model_len` of the served name's card in `/v1/models`, remembered for requests.

        `/v1/models` is behind `--api-key` (`/health` is not): reading it is also what keeps
        an adapter without the right key from reporting ready while every call gets 401.
        """
        try:
            self._context = await self._read_max_model_len(engine)
        except Exception as exc:
            self._context_unknown = str(exc)
            raise
        if not self._context:
            self._context_unknown = f"the engine's {MODELS} gives no max_model_len"
        return self._context

    async def _read_max_model_len(self, engine: base.EngineHTTP) -> int:
        try:
            cards = (await engine.get_json(MODELS) or {}).get("data") or []
        except base.EngineHTTPError as exc:
            raise exc.on_route(f"GET {MODELS}") from None
        for card in cards:
            if card.get("id") == self.served_model_name:
                root = card.get("root")
                self._root = root if isinstance(root, str) else ""
                return int(card.get("max_model_len") or 0)
        # Every request would get 404: a misconfiguration, so never report ready.
        served = ", ".join(str(card.get("id")) for card in cards)
        raise LookupError(
            f"the engine serves {served or 'no model'}, not {self.served_model_name!r}"
        )
