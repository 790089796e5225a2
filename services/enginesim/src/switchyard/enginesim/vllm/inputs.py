"""From a validated request to what the engine runs: prompts, sampling parameters, constraint.

The checks and their texts follow vLLM 0.33, in its order: the output limit against the
context (`renderers/params.py:TokenizeParams`), the prompt's length in characters and
then in tokens, the clamping of `max_tokens` to what the context leaves
(`serve/utils/api_utils.py:get_max_tokens`), then `SamplingParams._verify_args`. The
structured-output constraint is only described here; the engine compiles it, as vLLM's
engine does when the request is added (so a bad one fails inside a stream).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from switchyard.enginesim import chat_template, tokenizer
from switchyard.enginesim.generation import SamplingParams
from switchyard.enginesim.structured import ConstraintKind
from switchyard.enginesim.vllm.errors import InvalidRequest, VllmError
from switchyard.enginesim.vllm.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingRequest,
)

MAX_N_SEQUENCES: Final = 16384  # VLLM_MAX_N_SEQUENCES
MAX_CHARS_PER_TOKEN: Final = max(len(tokenizer.token_text(i)) for i in range(tokenizer.CHAR_BASE))
_SAMPLING_EPS: Final = 1e-5
_INLINE_TOKENIZE_CHARS: Final = 8192  # about 1 ms of tokenizing; longer goes off the loop


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class ConstraintSpec:
    """A structured-output constraint as requested, before it is compiled."""

    kind: ConstraintKind
    value: Any


@dataclass(frozen=True, slots=True)
class Choice:
    """One sequence to generate: its index in the response and its prompt."""

    index: int
    prompt: int
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class Job:
    """A request the engine can run."""

    request_id: str
    prompts: tuple[Prompt, ...]
    choices: tuple[Choice, ...]
    constraint: ConstraintSpec | None
    stop_token_ids: frozenset[int]
    include_stop_str_in_output: bool
    max_tokens: int  # the largest output limit of its prompts, for the metrics
    n: int
    arrival: float  # event-loop time the request arrived

    @property
    def prompt_tokens(self) -> int:
        return sum(p.tokens for p in self.prompts)


class NotMultimodal(VllmError):
    """The simulated model reads text only (vLLM: `… is not a multimodal model`)."""


async def count_tokens(text: str) -> int:
    if len(text) <= _INLINE_TOKENIZE_CHARS:
        return tokenizer.count(text)
    return await asyncio.to_thread(tokenizer.count, text)


async def encode(text: str) -> list[int]:
    if len(text) <= _INLINE_TOKENIZE_CHARS:
        return tokenizer.encode(text)
    return await asyncio.to_thread(tokenizer.encode, text)


def message_text(message: ChatMessage, model: str) -> str:
    """A message's content as text: a string, or its text parts joined by newlines."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise NotMultimodal(f"{model} is not a multimodal model")
        texts.append(part.text)
    return "\n".join(texts)


def render_chat(
    messages: Sequence[ChatMessage],
    model: str,
    *,
    add_generation_prompt: bool,
    continue_final_message: bool,
) -> str:
    """The prompt text for chat messages, with the simulated model's template."""
    rendered = [{"role": m.role, "content": message_text(m, model)} for m in messages]
    try:
        text = chat_template.render(rendered, add_generation_prompt=add_generation_prompt)
    except ValueError as exc:
        raise VllmError(str(exc)) from None
    if continue_final_message:
        # Leave the last message open, so the model continues it.
        text = text.removesuffix(f"{tokenizer.IM_END}\n")
    return text


class Renderer:
    """vLLM's request checks for one served context length."""

    def __init__(self, max_model_len: int, default_seed: int | None = None) -> None:
        self.max_model_len = max_model_len
        self.default_seed = default_seed

    def _check_output_limit(self, limit: int | None, param: str) -> None:
        if limit is not None and limit > self.max_model_len:
            raise InvalidRequest(
                f"{param}={limit} cannot be greater than max_model_len={self.max_model_len}. "
                "Please request fewer output tokens.",
                parameter=param,
                value=limit,
            )

    async def prompt(self, text: str) -> Prompt:
        limit = self.max_model_len
        max_chars = limit * MAX_CHARS_PER_TOKEN
        if len(text) > max_chars:
            # Refused before tokenizing, to spare the work (vLLM's `_text_len_check`).
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"prompt contains {len(text)} characters (more than {max_chars} characters, "
                f"which is the upper bound for {limit} input tokens). "
                "Please reduce the length of the input prompt.",
                parameter="input_text",
                value=len(text),
            )
        tokens = await count_tokens(text)
        if tokens > limit:
            # vLLM tokenizes with truncation at limit + 1, so it only knows "at least".
            tokens = limit + 1
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"prompt contains at least {tokens} input tokens, which exceeds this limit "
                "even without any output tokens. Please reduce the length of the input prompt.",
                parameter="input_tokens",
                value=tokens,
            )
        return Prompt(text, tokens)

    async def completion_prompts(self, request: CompletionRequest) -> list[Prompt]:
        self._check_output_limit(request.max_tokens or 0, "max_tokens")
        raw = request.prompt
        texts: list[str] = []
        if isinstance(raw, str):
            texts.append(raw)
        elif raw and all(isinstance(p, int) for p in raw):
            texts.append(self._decode([p for p in raw if isinstance(p, int)]))
        else:
            for p in raw or ():
                if isinstance(p, str):
                    texts.append(p)
                elif isinstance(p, list):
                    texts.append(self._decode(p))
        return [await self.prompt(text) for text in texts]

    async def chat_prompt(self, request: ChatCompletionRequest, model: str) -> Prompt:
        limit, param = request.output_limit
        self._check_output_limit(limit, param)
        text = render_chat(
            request.messages,
            model,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
        )
        return await self.prompt(text)

    @staticmethod
    def _decode(ids: Sequence[int]) -> str:
        if ids and max(ids) >= tokenizer.VOCAB_SIZE:
            raise InvalidRequest(f"Token id {max(ids)} is out of vocabulary")
        return tokenizer.decode(ids)

    def max_tokens(self, requested: int | None, prompt: Prompt) -> int:
        """What the context leaves, capped by the request (vLLM clamps; it does not refuse)."""
        room = self.max_model_len - prompt.tokens
        return room if requested is None else min(room, requested)

    def sampling(self, request: SamplingRequest, max_tokens: int, index: int) -> SamplingParams:
        """`SamplingParams` for choice `index`, checked as vLLM's `_verify_args` does."""
        n = request.n
        temperature = 1.0 if request.temperature is None else request.temperature
        top_p = 1.0 if request.top_p is None else request.top_p
        top_k = 0 if request.top_k is None else request.top_k
        min_p = 0.0 if request.min_p is None else request.min_p
        repetition = 1.0 if request.repetition_penalty is None else request.repetition_penalty
        presence = request.presence_penalty or 0.0
        frequency = request.frequency_penalty or 0.0
        if n < 1:
            raise InvalidRequest(f"n must be at least 1, got {n}.")
        if n > MAX_N_SEQUENCES:
            raise InvalidRequest(
                f"n must be at most {MAX_N_SEQUENCES}, got {n}. To increase this limit, "
                "set the VLLM_MAX_N_SEQUENCES environment variable."
            )
        if not -2.0 <= presence <= 2.0:
            raise InvalidRequest(f"presence_penalty must be in [-2, 2], got {presence}.")
        if not -2.0 <= frequency <= 2.0:
            raise InvalidRequest(f"frequency_penalty must be in [-2, 2], got {frequency}.")
        if not math.isfinite(repetition):
            raise InvalidRequest(f"repetition_penalty must be a finite number, got {repetition}.")
        if repetition <= 0.0:
            raise InvalidRequest(f"repetition_penalty must be greater than zero, got {repetition}.")
        if not math.isfinite(temperature):
            raise InvalidRequest(
                f"temperature must be a finite number, got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        if temperature < 0.0:
            raise InvalidRequest(
                f"temperature must be non-negative, got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        if temperature > 2.0:
            raise InvalidRequest(
                f"temperature must be in [0, 2], got {temperature}.",
                parameter="temperature",
                value=temperature,
            )
        if not 0.0 < top_p <= 1.0:
            raise InvalidRequest(
                f"top_p must be in (0, 1], got {top_p}.", parameter="top_p", value=top_p
            )
        if top_k < -1:
            raise InvalidRequest(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
        if not 0.0 <= min_p <= 1.0:
            raise InvalidRequest(f"min_p must be in [0, 1], got {min_p}.")
        if max_tokens < 1:
            raise InvalidRequest(
                f"max_tokens must be at least 1, got {max_tokens}.",
                parameter="max_tokens",
                value=max_tokens,
            )
        if request.min_tokens < 0:
            raise InvalidRequest(
                f"min_tokens must be greater than or equal to 0, got {request.min_tokens}."
            )
        if request.min_tokens > max_tokens:
            raise InvalidRequest(
                f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                f"got {request.min_tokens}."
            )
        stops = request.stop_strings
        if any(not stop for stop in stops):
            raise InvalidRequest("stop cannot contain an empty string.")
        greedy = temperature < _SAMPLING_EPS
        if greedy and n > 1:
            raise InvalidRequest(f"n must be 1 when using greedy sampling, got {n}.")
        seed = None if request.seed == -1 else request.seed
        if seed is None and self.default_seed is not None:
            seed = self.default_seed
        if seed is not None and n > 1:
            seed += index  # vLLM gives each of n sequences its own seed: seed + index
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            top_k=0 if greedy else top_k,
            seed=seed,
            stop=stops,
            ignore_eos=request.ignore_eos,
            min_tokens=request.min_tokens,
        )


def constraint_spec(request: SamplingRequest) -> ConstraintSpec | None:
    """The request's constraint: `response_format` overrides `structured_outputs`, as in vLLM."""
    so = request.structured_outputs
    rf = request.response_format
    if rf is not None and rf.type != "text":
        if so is not None and (
            so.json_ is not None
            or so.regex is not None
            or so.choice is not None
            or so.grammar is not None
            or so.structural_tag is not None
        ):
            # vLLM merges the two into one StructuredOutputsParams, which then holds two.
            raise InvalidRequest(
                "You can only use one kind of structured outputs constraint but multiple "
                "are specified"
            )
        if rf.type == "json_object":
            return ConstraintSpec("json_object", None)
        schema = rf.json_schema.json_schema if rf.json_schema is not None else None
        if schema is None:
            raise InvalidRequest(
                "You must use one kind of structured outputs constraint but none are specified"
            )
        return ConstraintSpec("json_schema", schema)
    if so is None:
        return None
    if so.structural_tag is not None:
        raise InvalidRequest(
            "structural_tag is not supported by the simulator", parameter="structured_outputs"
        )
    if so.json_ is not None:
        return ConstraintSpec("json_schema", so.json_)
    if so.regex is not None:
        return ConstraintSpec("regex", so.regex)
    if so.choice is not None:
        return ConstraintSpec("choice", tuple(so.choice))
    if so.grammar is not None:
        return ConstraintSpec("grammar", so.grammar)
    return ConstraintSpec("json_object", None) if so.json_object else None
