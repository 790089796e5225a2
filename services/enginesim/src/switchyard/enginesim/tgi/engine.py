"""One simulated TGI: admission, validation, queueing, generation, stopping and its counts.

A request goes through the router's steps in its order (`infer/mod.rs`): take a
concurrency permit or fail at once with `Overloaded` (429), validate, queue for the
batch, generate. The routes (native, chat, completions) drive these steps and only
differ in how they write the tokens out. As the batch takes a request, the router's radix
allocator matches its input against the prefix cache (`prefix_cache`; `ATTENTION` sets the
block size, `PREFIX_CACHING` turns it off): only the rest is prefilled.

TGI stops as its `StoppingCriteria` (`server/text_generation_server/utils/tokens.py`)
checks after each token, in this order: the token budget (`length`, even when that token
is EOS), the EOS token (`eos_token`), then each stop sequence as an end-anchored match on
the output so far (`stop_sequence`). A stop string therefore ends the output only when a
token completes it, and it stays in `generated_text`; one hidden inside a token goes
unseen. The core generates with no stop strings (its rules are vLLM's); `apply_stopping`
cuts.

Validation follows the router (`router/src/validation.rs`): its rules, order and messages,
each an `InferError("validation", ...)` with the router's exact text, e.g. "`top_p` must be
> 0.0 and < 1.0".

Token logprobs are the core's (`enginesim.logprobs`), the same values every simulated
engine gives. A tool call's job carries the JSON the model writes (`Job.script`), drawn in
validation, where TGI compiles the tool grammar.

JSON grammars are read as outlines-core reads them (the revision TGI's router pins):
ONE keyword per schema node, the first present of `properties`, `allOf`, `anyOf`,
`oneOf`, `prefixItems`, `enum`, `const`, `$ref`, `type`. So a node with `properties` is an
object with exactly those keys, whatever its `type`, `additionalProperties` or
`minProperties` say: `{"type": "object", "properties": {}}` admits only `{}`. A non-empty
node with none of the keywords, or a node that is not an object, cannot be compiled.
`outlines_schema` rewrites a schema into one the engine-neutral writer
(`structured.SchemaWriter`) reads the same way; outlines-core's other quirks (e.g. nested
`{"type": "object"}` nesting at most two levels) are left to the writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeVar

import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator

from switchyard.enginesim import logprobs as core_logprobs
from switchyard.enginesim import tokenizer
from switchyard.enginesim import tools as core_tools
from switchyard.enginesim.generation import LARGE_TEXT, Generation, SamplingParams, decide, off_loop
from switchyard.enginesim.generation import rng as generation_rng
from switchyard.enginesim.prefix_cache import PrefixCache
from switchyard.enginesim.scheduler import Overloaded, Scheduler
from switchyard.enginesim.serving import ClientDisconnected
from switchyard.enginesim.stats import SimStats
from switchyard.enginesim.structured import Constraint, ConstraintError
from switchyard.enginesim.tgi.errors import FAILURE_LABEL, InferError, validation
from switchyard.enginesim.tgi.flags import Config
from switchyard.enginesim.tgi.metrics import Metrics
from switchyard.enginesim.tgi.tools import ToolDef, call_text, grammar_schema, merge_quote_comma
from switchyard.enginesim.tgi.vision import prepare_input
from switchyard.enginesim.tgi.wire import Grammar, Parameters

T = TypeVar("T")
log = logging.getLogger("switchyard.enginesim.tgi")
FinishReason = Literal["length", "eos_token", "stop_sequence"]
DEFAULT_GENERATION_LENGTH: Final = 1024
"""TGI generates in chunks of at most this many tokens, re-queueing the request (its prompt
grown by the output so far) after each: only one chunk is checked against the context."""
_ENTROPY: Final = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Job:
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
    #: What the model writes instead of free text (a tool call's JSON), then EOS.
    script: str | None = None

    @property
    def input_length(self) -> int:
        return len(self.input_ids)


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


def check_grammar_error(job: Job) -> None:
    """Raise the shard's error for a grammar it cannot compile (after admission)."""
    if job.constraint_error is not None:
        raise InferError("generation", f"invalid grammar: {job.constraint_error}")


_KEYWORDS: Final = (
    "properties", "allOf", "anyOf", "oneOf", "prefixItems", "enum", "const", "$ref", "type",
)  # fmt: skip
_DEFINITIONS: Final = ("$defs", "definitions")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES: Final = ("items", "additionalProperties")


class OutlinesError(ValueError):
    """outlines-core cannot turn the schema into a regex; the text is its message."""


def outlines_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with every node reduced to what outlines-core makes of it."""
    return _node(schema)


def _node(node: object) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise OutlinesError("Invalid JSON Schema: expected an object")
    out = {k: v for k, v in node.items() if k in _DEFINITIONS}
    for key in _DEFINITIONS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: _lenient(sub) for name, sub in out[key].items()}
    if not node:
        return out  # any JSON value
    keyword = next((k for k in _KEYWORDS if k in node), None)
    if keyword is None:
        raise OutlinesError(
            f"Unsupported JSON Schema structure {_compact(node)} \n"
            "Make sure it is valid to the JSON Schema specification and check if it's "
            "supported by Outlines.\nIf it should be supported, please open an issue."
        )
    if keyword == "properties":
        props = node["properties"]
        if not isinstance(props, Mapping):
            raise OutlinesError("'properties' not found or not an object")
        required = node.get("required")
        names = required if isinstance(required, list) else []
        return out | {
            "type": "object",
            "properties": {name: _node(sub) for name, sub in props.items()},
            "required": [n for n in names if n in props],
            "additionalProperties": False,
        }
    rest = dict(node)
    for key in _SCHEMA_LISTS:
        if isinstance(rest.get(key), list):
            rest[key] = [_node(sub) for sub in rest[key]]
    for key in _SCHEMA_VALUES:
        if isinstance(rest.get(key), Mapping):
            rest[key] = _node(rest[key])
    return rest | out


def _lenient(node: object) -> object:
    """A definition: rewritten if it is a schema outlines-core could read, else kept as is
    (only a `$ref` to it would fail, and then the writer says so)."""
    try:
        return _node(node)
    except OutlinesError:
        return node


def _compact(node: Mapping[str, Any]) -> str:
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class OutToken:
    """One generated token as TGI reports it."""

    id: int
    text: str
    logprob: float
    special: bool

    def json(self) -> dict[str, object]:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(frozen=True, slots=True)
class Decoded:
    """The tokens TGI emits for a request and why it stopped."""

    tokens: tuple[OutToken, ...]  # every generated token, EOS included
    text: str  # `generated_text`: the tokens' text without special tokens
    finish_reason: FinishReason

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)


def logprob(token_id: int, position: int, seed: int) -> float:
    """A made-up but stable log-probability for a generated token."""
    mixed = (token_id * 2654435761 + position * 40503 + seed) & 0xFFFF
    return -round(mixed / 0xFFFF * 2.5, 4)


def apply_stopping(
    generation: Generation, max_new_tokens: int, stop: Sequence[str], seed: int
) -> Decoded:
    """Cut `generation` (made without stop strings) where TGI's criteria stop it."""
    pieces = list(zip(generation.token_ids, generation.tokens, strict=True))
    if generation.eos:
        pieces.append((tokenizer.EOS_TOKEN_ID, tokenizer.EOS_TOKEN))
    out: list[OutToken] = []
    text: list[str] = []
    so_far = ""
    reason: FinishReason = "length"
    for position, (tid, piece) in enumerate(pieces):
        special = tokenizer.is_special(tid)
        out.append(OutToken(tid, piece, logprob(tid, position, seed), special))
        if not special:
            text.append(piece)
            so_far = (so_far + piece)[-300:]  # TGI keeps only the output's tail too
        if position + 1 >= max_new_tokens:
            reason = "length"
            break
        if special and tid == tokenizer.EOS_TOKEN_ID:
            reason = "eos_token"
            break
        if any(so_far.endswith(s) for s in stop if s):
            reason = "stop_sequence"
            break
    return Decoded(tuple(out), "".join(text), reason)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A generation decided for an admitted request (then paced out)."""

    job: Job
    decoded: Decoded
    top_tokens: tuple[tuple[OutToken, ...], ...]
    queued_s: float
    validated_s: float
    started_at: float  # perf_counter() when the batch took it
    prefill_tokens: int  # input tokens not found in the prefix cache

    @property
    def seed(self) -> int | None:
        """The seed TGI reports: only sampled generations have one."""
        return self.job.seed if self.job.do_sample else None

    def prefill(self) -> list[dict[str, Any]]:
        """`details.prefill`: the input tokens (the first one has no logprob)."""
        return [
            {
                "id": tid,
                "text": tokenizer.token_text(tid),
                "logprob": None if i == 0 else logprob(tid, -i, 0),
            }
            for i, tid in enumerate(self.job.input_ids)
        ]


@dataclass(frozen=True, slots=True)
class Step:
    """One streamed token; `outcome` is set on the last one."""

    index: int
    token: OutToken
    top_tokens: Sequence[OutToken]
    outcome: Outcome | None


class Engine:
    """One simulated TGI router and its shards."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = SimStats()
        # Not listening while "loading" stands in for the load delay (see `serve`).
        latency = replace(config.sim.latency, load_delay_s=0)
        self.scheduler = Scheduler(config.max_running, None, latency)
        self.metrics = Metrics(config, self)
        self.batch_tokens = 0
        self.prefix_cache = PrefixCache(
            config.block_size, config.kv_cache_tokens // config.block_size,
            enabled=config.prefix_caching, trim_last_token=True,
        )  # fmt: skip

    def validate_best_of(self, best_of: int) -> int:
        if self.config.max_best_of == 1 and best_of != 1:
            raise validation("`best_of` != 1 is not allowed for this endpoint")
        if best_of > self.config.max_best_of:
            raise validation(
                f"`best_of` must be > 0 and <= {self.config.max_best_of}. Given: {best_of}"
            )
        return best_of

    def _check(self, inputs: str, p: Parameters, tool: ToolDef | None = None) -> Job:
        """A Job, or InferError("validation") for the first rule broken.

        `tool`: the function the (tool-constrained) model calls; its JSON is decided here,
        where TGI compiles the tool grammar.
        """
        c = self.config
        best_of = p.best_of or 1
        sampling = (
            p.do_sample
            or p.temperature is not None
            or p.top_k is not None
            or p.top_p is not None
            or p.typical_p is not None
        )
        temperature = 1.0 if p.temperature is None else p.temperature
        rules = (  # in the router's order
            (best_of > 1 and not sampling, "you must use sampling when `best_of` is > 1"),
            (temperature <= 0, "`temperature` must be strictly positive"),
            (p.repetition_penalty is not None and p.repetition_penalty <= 0, "`repetition_penalty` must be strictly positive"),
            (not -2 <= (p.frequency_penalty or 0) <= 2, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
            (p.top_p is not None and not 0 < p.top_p < 1, "`top_p` must be > 0.0 and < 1.0"),
            (p.typical_p is not None and not 0 < p.typical_p < 1, "`typical_p` must be > 0.0 and < 1.0"),
            (p.top_k is not None and p.top_k <= 0, "`top_k` must be strictly positive"),
            (p.max_new_tokens == 0, "`max_new_tokens` must be strictly positive"),
            (
                len(p.stop) > c.max_stop_sequences,
                f"`stop` supports up to {c.max_stop_sequences} stop sequences. Given: {len(p.stop)}",
            ),
            (p.seed is not None and best_of > 1, "`seed` must not be set when `best_of` > 1"),
            (
                (p.top_n_tokens or 0) > c.max_top_n_tokens,
                f"`top_n_tokens` must be >= 0 and <= {c.max_top_n_tokens}. Given: {p.top_n_tokens}",
            ),
            (not inputs, "`inputs` cannot be empty"),
            (
                p.truncate is not None and not 0 < p.truncate <= c.max_input_tokens,
                f"`truncate` must be strictly positive and less than {c.max_input_tokens}. Given: {p.truncate}",
            ),
        )  # fmt: skip
        for broken, message in rules:
            if broken:
                raise validation(message)
        ids, read = prepare_input(inputs, self.config.sim.multimodal)
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
        if tool is not None and self.config.disable_grammar_support:
            raise validation("grammar is not supported")
        seed = p.seed
        if seed is None:
            seed = (
                self.config.sim.seed
                if self.config.sim.seed is not None
                else _ENTROPY.getrandbits(64)
            )
        # The shard samples when asked to or when a warper is on (`NextTokenChooser`).
        do_sample = (
            p.do_sample
            or temperature != 1.0
            or (p.top_k or 0) != 0
            or (p.top_p is not None and p.top_p < 1)
            or (p.typical_p is not None and p.typical_p < 1)
        )
        job = Job(
            inputs=tokenizer.decode(ids) if truncated else read,
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
        return job if tool is None else replace(job, script=self._call_text(job, tool))

    def _call_text(self, job: Job, tool: ToolDef) -> str:
        """The JSON the model writes to call `tool`: arguments from the tool grammar's
        schema, as outlines-core reads it, drawn like the output's text."""
        rng = generation_rng(job.inputs, _sampling(job), self.config.sim.seed, salt="tool")
        try:
            arguments = core_tools.arguments(outlines_schema(grammar_schema(tool)), rng)
        except (OutlinesError, ConstraintError) as exc:
            raise validation(f"cannot compile regex from schema: {exc}") from None
        return call_text(tool, arguments)

    def _lengths(self, input_length: int, requested: int | None) -> tuple[int, int]:
        """(the chunk checked against the context, the effective limit).

        Without `max_new_tokens` each chunk takes what is left of the context (at most
        1024), so the output may fill it. With it, every chunk asks for
        `min(max_new_tokens, 1024)` more tokens, and TGI re-queues while fewer than
        `max_new_tokens` were generated and prompt, output and a chunk still fit: above
        1024 the output stops at a multiple of 1024, short of the context or past
        `max_new_tokens` (`infer/mod.rs:generate_stream`).
        """
        total = self.config.max_total_tokens
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
        if self.config.disable_grammar_support:
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

    def fail(self, error: InferError) -> InferError:
        self.metrics.failure(FAILURE_LABEL[error.error_type])
        return error

    @contextmanager
    def counting_drops(self) -> Iterator[None]:
        """Count a request the client abandoned as `tgi_request_failure{err="dropped"}`."""
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit, ClientDisconnected):
            self.metrics.failure("dropped")
            raise

    async def validate(
        self, inputs: str, parameters: Parameters, tool: ToolDef | None = None
    ) -> Job:
        """Take a permit, then validate (TGI's order: an overloaded server answers 429 first)."""
        if self.scheduler.running + self.scheduler.waiting >= self.config.max_concurrent_requests:
            self.metrics.failure("overloaded")
            raise Overloaded("Model is overloaded")
        try:  # tokenizing a large input: off the loop
            job = await off_loop(len(inputs) > LARGE_TEXT, self._check, inputs, parameters, tool)
        except InferError as error:
            raise self.fail(error) from None
        self.metrics.observe("tgi_request_input_length", job.input_length)
        self.metrics.observe("tgi_request_max_new_tokens", job.max_new_tokens)
        return job

    @asynccontextmanager
    async def admitted(self, job: Job, received_at: float) -> AsyncIterator[Outcome]:
        """Queue for the batch, then hold a batch slot for the block with the generation decided."""
        limit = self.config.max_concurrent_requests
        validated_s = time.perf_counter() - received_at
        budget = job.input_length + job.max_new_tokens  # the batch's reservation
        try:
            async with self.scheduler.try_admit(limit, job.input_length) as granted:
                self.batch_tokens += budget
                try:
                    try:
                        check_grammar_error(job)
                        decoded, top = await self._decide(job)
                    except InferError as error:
                        raise self.fail(error) from None
                    # The router's radix allocator matches the prefix as the batch takes it.
                    lookup = await self.prefix_cache.lookup(job.input_ids)
                    self.metrics.prefilled(self.scheduler.latency.first_token_s(lookup.uncached))
                    started = time.perf_counter()
                    yield Outcome(
                        job, decoded, top, granted.queued_s, validated_s, started, lookup.uncached
                    )
                finally:
                    self.batch_tokens -= budget
        except Overloaded:  # a permit taken by another request since `validate`
            self.metrics.failure("overloaded")
            raise

    async def _decide(self, job: Job) -> tuple[Decoded, tuple[tuple[OutToken, ...], ...]]:
        limit = job.max_total_new_tokens
        params = _sampling(job)
        try:
            generation = await decide(
                job.inputs, params, default_max_tokens=limit, script=job.script
            )
        except ConstraintError as exc:
            raise InferError("generation", str(exc)) from None
        except Exception as exc:  # a shard that fails answers 424; so does a simulator bug
            log.exception("generation failed")
            raise InferError("generation", f"{type(exc).__name__}: {exc}") from None
        if job.script is not None:
            generation = merge_quote_comma(generation)
        decoded = apply_stopping(generation, limit, job.stop, job.seed)
        return with_logprobs(decoded, job.top_n_tokens, greedy=not job.do_sample)

    def succeeded(self, outcome: Outcome, received_at: float) -> None:
        """Record a finished request as the router does on its last token."""
        now = time.perf_counter()
        inference = now - outcome.started_at
        tokens = outcome.decoded.generated_tokens
        m = self.metrics
        m.request_success += 1
        m.observe("tgi_request_duration", now - received_at)
        m.observe("tgi_request_validation_duration", outcome.validated_s)
        m.observe("tgi_request_queue_duration", outcome.queued_s)
        m.observe("tgi_request_inference_duration", inference)
        m.observe("tgi_request_mean_time_per_token_duration", inference / max(tokens, 1))
        m.observe("tgi_request_generated_tokens", tokens)

    # --- runs: unary, best-of, token by token ----------------------------------------------
    async def unary(
        self, received_at: float, inputs: str, parameters: Parameters,
        tool: ToolDef | None = None,
    ) -> Outcome:  # fmt: skip
        """A whole generation (raises InferError or Overloaded); `tool`: see `_check`."""
        job = await self.validate(inputs, parameters, tool)
        async with self.admitted(job, received_at) as outcome:
            await self.scheduler.sleep_generation(
                outcome.decoded.generated_tokens, outcome.prefill_tokens
            )
        self.succeeded(outcome, received_at)
        return outcome

    async def best_of(
        self, received_at: float, inputs: str, parameters: Parameters
    ) -> list[Outcome]:
        """`best_of` generations at once, each with its own permit (as TGI runs them), best first."""
        best_of = parameters.best_of or 1
        if best_of <= 1:
            return [await self.unary(received_at, inputs, parameters)]
        self.validate_best_of(best_of)
        outcomes = await all_or_none(
            [self.unary(received_at, inputs, parameters) for _ in range(best_of)]
        )

        def mean_logprob(outcome: Outcome) -> float:
            tokens = outcome.decoded.tokens
            return sum(t.logprob for t in tokens) / max(len(tokens), 1)

        return sorted(outcomes, key=mean_logprob, reverse=True)

    async def steps(
        self, received_at: float, inputs: str, parameters: Parameters,
        tool: ToolDef | None = None,
    ) -> AsyncGenerator[Step, None]:  # fmt: skip
        """The tokens as the model produces them (raises InferError or Overloaded)."""
        job = await self.validate(inputs, parameters, tool)
        async with self.admitted(job, received_at) as outcome:
            last = outcome.decoded.generated_tokens
            index = 0
            async for token in self.scheduler.pace(outcome.decoded.tokens, outcome.prefill_tokens):
                index += 1
                top = outcome.top_tokens[index - 1] if outcome.top_tokens else ()
                if index == last:
                    self.succeeded(outcome, received_at)
                yield Step(index, token, top, outcome if index == last else None)

    def refuse_streaming(self, parameters: Parameters) -> None:
        """What a stream cannot do (`/generate_stream`'s own checks)."""
        if (parameters.best_of or 1) != 1:
            raise self.fail(validation("`best_of` != 1 is not supported when streaming tokens"))
        if parameters.decoder_input_details:
            raise self.fail(
                validation("`decoder_input_details` == true is not supported when streaming tokens")
            )


def _sampling(job: Job) -> SamplingParams:
    """The core's sampling parameters for a job (its whole output budget)."""
    return SamplingParams(
        max_tokens=job.max_total_new_tokens,
        temperature=job.temperature if job.do_sample else 0.0,
        top_p=job.top_p,
        top_k=job.top_k,
        seed=job.seed,
        constraint=job.constraint,
    )


async def all_or_none(work: Sequence[Awaitable[T]]) -> list[T]:
    """All results, or the first error with the rest cancelled."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def with_logprobs(
    decoded: Decoded, top_n: int, *, greedy: bool
) -> tuple[Decoded, tuple[tuple[OutToken, ...], ...]]:
    """`decoded` with the core's logprob of each token, and its `top_n` most likely tokens
    at each position (none when `top_n` is 0), the chosen one among them where it ranks."""
    values = core_logprobs.logprobs([t.id for t in decoded.tokens], top_n, greedy=greedy)
    tokens = tuple(
        replace(t, logprob=v.logprob) for t, v in zip(decoded.tokens, values, strict=True)
    )
    if not top_n:
        return replace(decoded, tokens=tokens), ()
    top = tuple(
        tuple(
            # The chosen one keeps its text (a merged tool-call token has no table entry).
            OutToken(a.token_id, t.text if a.token_id == t.id else a.token, a.logprob,
                     tokenizer.is_special(a.token_id))
            for a in v.top
        )
        for t, v in zip(tokens, values, strict=True)
    )  # fmt: skip
    return replace(decoded, tokens=tokens), top
