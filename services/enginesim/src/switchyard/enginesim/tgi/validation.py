"""TGI's request validation (`router/src/validation.rs`): its rules, order and messages.

Everything here raises `InferError("validation", ...)` with the router's exact text,
e.g. "`top_p` must be > 0.0 and < 1.0" or "`inputs` tokens + `max_new_tokens` must be
<= 1024. Given: 1100 `inputs` tokens and 16 `max_new_tokens`".
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator

from switchyard.enginesim import tokenizer
from switchyard.enginesim.structured import Constraint, ConstraintError
from switchyard.enginesim.tgi.config import TgiConfig
from switchyard.enginesim.tgi.errors import InferError, validation
from switchyard.enginesim.tgi.outlines import OutlinesError, outlines_schema
from switchyard.enginesim.tgi.params import Grammar, Parameters

DEFAULT_GENERATION_LENGTH: Final = 1024
"""TGI generates in chunks of at most this many tokens, re-queueing the request (its prompt
grown by the output so far) after each: only one chunk is checked against the context."""
_ENTROPY: Final = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class ValidRequest:
    """A request the router accepted, as the shards see it."""

    inputs: str  # the text the model reads (after left truncation)
    input_ids: tuple[int, ...]
    max_new_tokens: int  # one chunk, as checked against the context (at most 1024)
    max_total_new_tokens: int  # the effective limit, over all the chunks
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop: tuple[str, ...]
    constraint: Constraint | None
    #: A grammar the shard fails to compile: TGI reports it as a generation error (424).
    constraint_error: str | None
    details: bool
    #: Whether the shard computes prompt logprobs (`details.prefill`): asked for, and the
    #: launcher ran with `--enable-prefill-logprobs`.
    prefill_logprobs: bool
    top_n_tokens: int

    @property
    def input_length(self) -> int:
        return len(self.input_ids)


class Validator:
    """The router's `Validation`, with the limits of one launcher configuration."""

    def __init__(self, config: TgiConfig, default_seed: int | None = None) -> None:
        self._config = config
        self._default_seed = default_seed

    def validate_best_of(self, best_of: int) -> int:
        if self._config.max_best_of == 1 and best_of != 1:
            raise validation("`best_of` != 1 is not allowed for this endpoint")
        if best_of > self._config.max_best_of:
            raise validation(
                f"`best_of` must be > 0 and <= {self._config.max_best_of}. Given: {best_of}"
            )
        return best_of

    def validate(
        self, inputs: str, p: Parameters, *, add_special_tokens: bool = True
    ) -> ValidRequest:
        """A ValidRequest, or InferError("validation") for the first rule broken."""
        del add_special_tokens  # the simulated tokenizer adds no special tokens either way
        c = self._config
        best_of = p.best_of or 1
        sampling = (
            p.do_sample
            or p.temperature is not None
            or p.top_k is not None
            or p.top_p is not None
            or p.typical_p is not None
        )
        if best_of > 1 and not sampling:
            raise validation("you must use sampling when `best_of` is > 1")
        temperature = 1.0 if p.temperature is None else p.temperature
        if temperature <= 0:
            raise validation("`temperature` must be strictly positive")
        if p.repetition_penalty is not None and p.repetition_penalty <= 0:
            raise validation("`repetition_penalty` must be strictly positive")
        if p.frequency_penalty is not None and not -2 <= p.frequency_penalty <= 2:
            raise validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
        if p.top_p is not None and not 0 < p.top_p < 1:
            raise validation("`top_p` must be > 0.0 and < 1.0")
        if p.typical_p is not None and not 0 < p.typical_p < 1:
            raise validation("`typical_p` must be > 0.0 and < 1.0")
        if p.top_k is not None and p.top_k <= 0:
            raise validation("`top_k` must be strictly positive")
        if p.max_new_tokens == 0:
            raise validation("`max_new_tokens` must be strictly positive")
        if len(p.stop) > c.max_stop_sequences:
            raise validation(
                f"`stop` supports up to {c.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
            )
        if p.seed is not None and best_of > 1:
            raise validation("`seed` must not be set when `best_of` > 1")
        if p.top_n_tokens is not None and p.top_n_tokens > c.max_top_n_tokens:
            raise validation(
                f"`top_n_tokens` must be >= 0 and <= {c.max_top_n_tokens}. Given: {p.top_n_tokens}"
            )
        if not inputs:
            raise validation("`inputs` cannot be empty")
        if p.truncate is not None and not 0 < p.truncate <= c.max_input_tokens:
            raise validation(
                f"`truncate` must be strictly positive and less than {c.max_input_tokens}. "
                f"Given: {p.truncate}"
            )
        ids = tokenizer.encode(inputs)
        truncated = p.truncate is not None and len(ids) > p.truncate
        if truncated:
            ids = ids[len(ids) - (p.truncate or 0) :]  # TGI truncates on the left
        input_length = len(ids)
        max_new, max_total_new = self._lengths(input_length, p.max_new_tokens)
        if input_length + max_new > c.max_total_tokens:
            raise validation(
                f"`inputs` tokens + `max_new_tokens` must be <= {c.max_total_tokens}. "
                f"Given: {input_length} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        if input_length > c.max_input_tokens:
            raise validation(
                f"`inputs` must have less than {c.max_input_tokens} tokens. Given: {input_length}"
            )
        constraint, constraint_error = self._grammar(p.grammar)
        seed = p.seed
        if seed is None:
            seed = (
                self._default_seed if self._default_seed is not None else _ENTROPY.getrandbits(64)
            )
        # The shard samples when asked to or when a warper is on (`NextTokenChooser`).
        do_sample = (
            p.do_sample
            or temperature != 1.0
            or (p.top_k or 0) != 0
            or (p.top_p is not None and p.top_p < 1)
            or (p.typical_p is not None and p.typical_p < 1)
        )
        return ValidRequest(
            inputs=tokenizer.decode(ids) if truncated else inputs,
            input_ids=tuple(ids),
            max_new_tokens=max_new,
            max_total_new_tokens=max_total_new,
            do_sample=do_sample,
            temperature=temperature,
            top_k=p.top_k or 0,
            top_p=1.0 if p.top_p is None else p.top_p,
            seed=seed,
            stop=p.stop,
            constraint=constraint,
            constraint_error=constraint_error,
            details=p.details,
            prefill_logprobs=p.decoder_input_details and c.enable_prefill_logprobs,
            top_n_tokens=p.top_n_tokens or 0,
        )

    def _lengths(self, input_length: int, requested: int | None) -> tuple[int, int]:
        """(the chunk checked against the context, the effective limit).

        Without `max_new_tokens` each chunk takes what is left of the context (at most
        1024), so the output may fill it. With it, every chunk asks for
        `min(max_new_tokens, 1024)` more tokens, and TGI re-queues while fewer than
        `max_new_tokens` were generated and prompt, output and a chunk still fit: above
        1024 the output stops at a multiple of 1024, short of the context or past
        `max_new_tokens` (`infer/mod.rs:generate_stream`).
        """
        total = self._config.max_total_tokens
        if requested is None:
            room = max(0, total - input_length)
            return min(room, DEFAULT_GENERATION_LENGTH), room
        chunk = min(requested, DEFAULT_GENERATION_LENGTH)
        chunks = 1
        while chunks * chunk < requested and input_length + (chunks + 1) * chunk <= total:
            chunks += 1
        return chunk, chunks * chunk

    def _grammar(self, grammar: Grammar | None) -> tuple[Constraint | None, str | None]:
        if grammar is None:
            return None, None
        if self._config.disable_grammar_support:
            raise validation("grammar is not supported")
        if grammar.kind == "regex":
            # The router passes regexes through; a bad one fails in the shard.
            try:
                return Constraint("regex", grammar.value), None
            except ConstraintError as exc:
                return None, str(exc)
        schema = _schema(grammar.value)
        try:
            return Constraint("json_schema", outlines_schema(schema)), None
        except (OutlinesError, ConstraintError) as exc:
            raise validation(f"cannot compile regex from schema: {exc}") from None


def _schema(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise validation(f"grammar is not valid: {exc}") from None
    if not isinstance(value, Mapping):
        raise validation("grammar is not supported")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise validation(f"grammar is not valid: {exc.message}") from None
    if "properties" not in value:
        raise validation("grammar is not valid: Grammar must have a 'properties' field")
    return value


def check_grammar_error(valid: ValidRequest) -> None:
    """Raise the shard's error for a grammar it cannot compile (after admission)."""
    if valid.constraint_error is not None:
        raise InferError("generation", f"invalid grammar: {valid.constraint_error}")
