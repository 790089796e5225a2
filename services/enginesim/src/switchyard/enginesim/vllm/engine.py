"""The simulated vLLM engine: a request's checks, admission, generation and pacing.

A request becomes a `Job` through vLLM 0.33's checks, in its order and words: the output
limit against the context (`renderers/params.py:TokenizeParams`), the prompt's length in
characters and then in tokens, the clamping of `max_tokens` to what the context leaves
(`serve/utils/api_utils.py:get_max_tokens`), then `SamplingParams._verify_args`. The
structured-output constraint is compiled, and the number of logprobs checked against
`--max-logprobs`, when the job runs, as vLLM's engine does when the request is added (so
a bad one fails inside a stream). A chat request's tools, reasoning and images go through
`chat`: each choice writes its reasoning and tool calls with generators seeded like its
text.

vLLM counts every unfinished request (running or waiting) against `--max-num-queued-reqs`
and refuses past it (`AsyncLLM.check_admission`), while the scheduler runs at most
`--max-num-seqs` at once and queues the rest in order. Each running request is kept as a
`Live` timeline, so metrics read the KV-cache use and the tokens generated so far at any
moment without per-token work. When scheduled, each prompt is looked up in the prefix cache
(`prefix_cache`, `--block-size` blocks, `--num-gpu-blocks-override` of them): time to first
token pays only for the tokens it does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from switchyard.enginesim import generation, reasoning, tokenizer, tools
from switchyard.enginesim.generation import (
    Generation,
    Prompt,
    SamplingParams,
    decide,
    off_loop,
    prompt_of,
)
from switchyard.enginesim.prefix_cache import PrefixCache
from switchyard.enginesim.scheduler import QueueFull, Scheduler
from switchyard.enginesim.stats import SimStats
from switchyard.enginesim.structured import Constraint, ConstraintError, ConstraintKind
from switchyard.enginesim.vllm import chat
from switchyard.enginesim.vllm.errors import InvalidRequest, QueueOverflow
from switchyard.enginesim.vllm.flags import Config
from switchyard.enginesim.vllm.metrics import Metrics
from switchyard.enginesim.vllm.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
)

MAX_N_SEQUENCES: Final = 16384  # VLLM_MAX_N_SEQUENCES
MAX_CHARS_PER_TOKEN: Final = max(len(tokenizer.token_text(i)) for i in range(tokenizer.CHAR_BASE))
_SAMPLING_EPS: Final = 1e-5
_CONSTRAINT_CACHE: Final = 128


@dataclass(frozen=True, slots=True)
class ConstraintSpec:
    """A structured-output constraint as requested, before the engine compiles it."""

    kind: ConstraintKind
    value: Any


@dataclass(frozen=True, slots=True)
class Choice:
    """One sequence to generate: its index in the response, its prompt, its sampling."""

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
    chat: chat.Features | None = None  # None: a completions request
    logprobs: int | None = None  # alternatives per token; None: no logprobs
    image_tokens: int = 0  # of a chat prompt's tokens, those its images stand for

    @property
    def prompt_tokens(self) -> int:
        return sum(p.tokens for p in self.prompts)


def decode(ids: Sequence[int]) -> str:
    if ids and max(ids) >= tokenizer.VOCAB_SIZE:
        raise InvalidRequest(f"Token id {max(ids)} is out of vocabulary")
    return tokenizer.decode(ids)


def constraint_spec(req: SamplingRequest) -> ConstraintSpec | None:
    """The request's constraint: `response_format` overrides `structured_outputs`, as in vLLM."""
    so, rf = req.structured_outputs, req.response_format
    if rf is not None and rf.type != "text":
        if so is not None and any(
            k is not None for k in (so.json_, so.regex, so.choice, so.grammar, so.structural_tag)
        ):
            # vLLM merges the two into one StructuredOutputsParams, which then holds two.
            raise InvalidRequest(
                "You can only use one kind of structured outputs constraint but multiple "
                "are specified"
            )
        if rf.type == "json_object":
            return ConstraintSpec("json_object", None)
        if rf.json_schema is None or rf.json_schema.json_schema is None:
            raise InvalidRequest(
                "You must use one kind of structured outputs constraint but none are specified"
            )
        return ConstraintSpec("json_schema", rf.json_schema.json_schema)
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


@dataclass(frozen=True, slots=True)
class Step:
    """What one engine step adds to a sequence."""

    text: str
    tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    token_id: int | None = None  # the token shown (None: only tokens not shown)
    position: int = 0  # its place in the output


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished sequence: its text, its steps and why it ended."""

    index: int
    prompt: int
    text: str
    steps: tuple[Step, ...]
    finish_reason: str
    stop_reason: str | int | None
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the tokens shown, then the EOS or stop token that ended it
    greedy: bool = False
    #: Its prompt's tokens found in the prefix cache, and those it added there (vLLM's
    #: `num_cached_tokens` and `num_cache_creation_tokens`), known once it is scheduled.
    cached_tokens: int = 0
    created_cache_tokens: int = 0


def outcome(choice: Choice, gen: Generation, job: Job) -> Outcome:
    """A sequence's steps: one per token shown, then one for the tokens that ended it
    (EOS, or what completed a stop string), which carries the finish reason."""
    stop_reason: str | int | None = gen.matched_stop
    for i, tid in enumerate(gen.token_ids):
        if tid in job.stop_token_ids:  # it counts; its text is not shown
            gen = Generation(gen.tokens[:i], gen.token_ids[:i], "stop", None, i + 1)
            stop_reason = tid
            break
    suffix = gen.matched_stop if job.include_stop_str_in_output and gen.matched_stop else ""
    steps = [
        Step(piece, 1, token_id=tid, position=k)
        for k, (piece, tid) in enumerate(zip(gen.tokens, gen.token_ids, strict=True))
    ]
    extra = gen.completion_tokens - len(gen.tokens)
    # The token that ended it is generated, counted and given logprobs, but not shown.
    ending = stop_reason if isinstance(stop_reason, int) else None
    ending = tokenizer.EOS_TOKEN_ID if ending is None and gen.eos else ending
    ids = gen.token_ids if ending is None else (*gen.token_ids, ending)
    if extra > 0 or not steps:
        last_id = ending if extra == 1 else None
        steps.append(
            Step(suffix, max(extra, 0), gen.finish_reason, stop_reason, last_id, len(gen.tokens))
        )
    else:
        last = steps[-1]
        steps[-1] = dataclasses.replace(
            last, text=last.text + suffix, finish_reason=gen.finish_reason, stop_reason=stop_reason
        )
    return Outcome(
        choice.index, choice.prompt, gen.text + suffix, tuple(steps), gen.finish_reason,
        stop_reason, gen.completion_tokens, ids, choice.params.temperature == 0,
    )  # fmt: skip


@dataclass(slots=True)
class Live:
    """A running request's timeline: its first token at `first_at`, then one step per `itl`."""

    prompt_tokens: int
    tokens: int
    steps: int
    first_at: float
    itl: float
    prefill_tokens: int = 0  # the prompt tokens not in the prefix cache

    def generated(self, now: float) -> int:
        if now < self.first_at:
            return 0
        if self.itl <= 0:
            return self.tokens
        done = min(self.steps, 1 + int((now - self.first_at) / self.itl))
        return self.tokens * done // self.steps


class Ticket:
    """One request's place: its `n` sequences among the unfinished ones, and itself among
    the requests being served (`/load`). `release` is idempotent."""

    __slots__ = ("_engine", "_n")

    def __init__(self, engine: Engine, n: int) -> None:
        self._engine, self._n = engine, n
        engine.unfinished += n
        engine.requests += 1

    def release(self) -> None:
        if self._n:
            self._engine.unfinished -= self._n
            self._engine.requests -= 1
            self._n = 0


class Engine:
    """One simulated vLLM engine (engine 0) serving `config.model_name`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats = SimStats()
        self.scheduler = Scheduler(config.max_num_seqs, None, config.sim.latency)
        self.metrics = Metrics(config.model_name, config.max_model_len, self)
        self.prefix_cache = PrefixCache(
            config.block_size, config.num_gpu_blocks, enabled=config.enable_prefix_caching
        )
        self.unfinished = 0
        self.requests = 0
        self._live: dict[int, Live] = {}
        self._constraints: OrderedDict[str, Constraint] = OrderedDict()

    # --- a request's checks, in vLLM's order (see the module's docstring) ------------------
    async def job(
        self, request_id: str, req: CompletionRequest | ChatCompletionRequest, arrival: float
    ) -> Job:
        """The request's prompts and each choice's sampling parameters, checked."""
        limit, param = req.output_limit
        if limit is not None and limit > self.config.max_model_len:
            raise InvalidRequest(
                f"{param}={limit} cannot be greater than max_model_len={self.config.max_model_len}. "
                "Please request fewer output tokens.",
                parameter=param,
                value=limit,
            )
        features = None
        image_tokens = 0
        if isinstance(req, ChatCompletionRequest):
            chat.check_tool_choice(req, self.config)
            text, image_tokens = await chat.render(req, self.config)
            prompts = [await self._prompt(text, image_tokens)]
            features = chat.features(req, self.config)
        else:
            prompts = [await self._prompt(text) for text in self._texts(req)]
        choices: list[Choice] = []
        for p, prompt in enumerate(prompts):
            room = (
                self.config.max_model_len - prompt.tokens
            )  # vLLM clamps to it; it does not refuse
            tokens = room if limit is None else min(room, limit)
            for i in range(req.n):
                params = self.sampling(req, tokens, i)
                choices.append(Choice(index=p * req.n + i, prompt=p, params=params))
        return Job(
            request_id=request_id,
            prompts=tuple(prompts),
            choices=tuple(choices),
            constraint=constraint_spec(req),
            stop_token_ids=frozenset(req.stop_token_ids or ()),
            include_stop_str_in_output=req.include_stop_str_in_output,
            max_tokens=max((c.params.max_tokens or 0 for c in choices), default=0),
            n=req.n,
            arrival=arrival,
            chat=features,
            logprobs=req.num_logprobs,
            image_tokens=image_tokens,
        )

    def _texts(self, req: CompletionRequest) -> list[str]:
        raw = req.prompt
        if isinstance(raw, str):
            return [raw]
        if raw and all(isinstance(p, int) for p in raw):
            return [decode([p for p in raw if isinstance(p, int)])]
        return [
            p if isinstance(p, str) else decode(p) for p in raw or () if isinstance(p, str | list)
        ]

    async def _prompt(self, text: str, image_tokens: int = 0) -> Prompt:
        """The prompt, checked against the context; `image_tokens`: what its images add."""
        limit = self.config.max_model_len
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
        prompt = await prompt_of(text)
        prompt = Prompt(prompt.text, prompt.tokens + image_tokens)
        if prompt.tokens > limit:
            # vLLM tokenizes with truncation at limit + 1, so it only knows "at least".
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"prompt contains at least {limit + 1} input tokens, which exceeds this limit "
                "even without any output tokens. Please reduce the length of the input prompt.",
                parameter="input_tokens",
                value=limit + 1,
            )
        return prompt

    def sampling(self, req: SamplingRequest, max_tokens: int, index: int) -> SamplingParams:
        """`SamplingParams` for choice `index`, checked as vLLM's `_verify_args` does."""
        n, min_tokens, stops = req.n, req.min_tokens, req.stop_strings
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        top_k = 0 if req.top_k is None else req.top_k
        min_p = 0.0 if req.min_p is None else req.min_p
        repetition = 1.0 if req.repetition_penalty is None else req.repetition_penalty
        presence, frequency = req.presence_penalty or 0.0, req.frequency_penalty or 0.0
        greedy = temperature < _SAMPLING_EPS
        n_limit = f"at most {MAX_N_SEQUENCES}, got {n}. To increase this limit, set the "
        n_limit += "VLLM_MAX_N_SEQUENCES environment variable"
        rules = (  # (broken, message, the parameter vLLM names), in `_verify_args`' order
            (n < 1, f"n must be at least 1, got {n}.", None),
            (n > MAX_N_SEQUENCES, f"n must be {n_limit}.", None),
            (not -2 <= presence <= 2, f"presence_penalty must be in [-2, 2], got {presence}.", None),
            (not -2 <= frequency <= 2, f"frequency_penalty must be in [-2, 2], got {frequency}.", None),
            (not math.isfinite(repetition), f"repetition_penalty must be a finite number, got {repetition}.", None),
            (repetition <= 0, f"repetition_penalty must be greater than zero, got {repetition}.", None),
            (not math.isfinite(temperature), f"temperature must be a finite number, got {temperature}.", "temperature"),
            (temperature < 0, f"temperature must be non-negative, got {temperature}.", "temperature"),
            (temperature > 2, f"temperature must be in [0, 2], got {temperature}.", "temperature"),
            (not 0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}.", "top_p"),
            (top_k < -1, f"top_k must be 0 (disable), or at least 1, got {top_k}.", None),
            (not 0 <= min_p <= 1, f"min_p must be in [0, 1], got {min_p}.", None),
            (max_tokens < 1, f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens"),
            (min_tokens < 0, f"min_tokens must be greater than or equal to 0, got {min_tokens}.", None),
            (
                min_tokens > max_tokens,
                f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.", None,
            ),
            (any(not s for s in stops), "stop cannot contain an empty string.", None),
            (greedy and n > 1, f"n must be 1 when using greedy sampling, got {n}.", None),
        )  # fmt: skip
        values = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        for broken, message, param in rules:
            if broken:
                value = values[param] if param else None
                raise InvalidRequest(message, parameter=param, value=value)
        seed = None if req.seed == -1 else req.seed
        seed = self.config.sim.seed if seed is None else seed
        if seed is not None and n > 1:
            seed += index  # vLLM gives each of n sequences its own seed: seed + index
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            top_k=0 if greedy else top_k,
            seed=seed,
            stop=stops,
            ignore_eos=req.ignore_eos,
            min_tokens=min_tokens,
        )

    def ticket(self, n: int, request_id: str, traceparent: str | None) -> Ticket:
        """Count a request as unfinished, or refuse it (and count that) past the limit."""
        limit = self.config.max_num_queued_reqs
        if limit is not None and self.unfinished + n > limit:
            self.metrics.rejections["max_num_queued_reqs"] += 1
            with contextlib.suppress(QueueFull), self.stats.track(request_id, traceparent):
                raise QueueFull("The request queue is full.")  # counted as rejected
            raise QueueOverflow()
        return Ticket(self, n)

    # --- what metrics read at scrape time ----------------------------------------------
    def kv_cache_usage(self, now: float) -> float:
        block = self.config.block_size
        blocks = sum(
            math.ceil((x.prompt_tokens + x.generated(now)) / block) for x in self._live.values()
        )
        return min(1.0, blocks / self.config.num_gpu_blocks)

    def generating(self, now: float) -> int:
        """Tokens generated so far by the running requests."""
        return sum(live.generated(now) for live in self._live.values())

    # --- running a job -----------------------------------------------------------------
    async def constraint(self, spec: ConstraintSpec) -> Constraint:
        """The compiled constraint (cached), or vLLM's 400 for one it cannot compile."""
        key = spec.kind + "\x00" + orjson.dumps(spec.value, option=orjson.OPT_SORT_KEYS).decode()
        cached = self._constraints.get(key)
        if cached is not None:
            self._constraints.move_to_end(key)
            return cached
        try:
            # Schemas are checked against their metaschema: milliseconds, off the loop.
            compiled = await asyncio.to_thread(Constraint, spec.kind, spec.value)
        except ConstraintError as exc:
            raise InvalidRequest(_compile_error(spec, exc)) from None
        self._constraints[key] = compiled
        if len(self._constraints) > _CONSTRAINT_CACHE:
            self._constraints.popitem(last=False)
        return compiled

    def check_logprobs(self, job: Job) -> None:
        """vLLM's `SamplingParams._validate_logprobs`, run as the engine adds the request."""
        limit = self.config.max_logprobs
        limit = tokenizer.VOCAB_SIZE if limit == -1 else limit
        asked = tokenizer.VOCAB_SIZE if job.logprobs == -1 else job.logprobs
        if asked and asked > limit:
            raise InvalidRequest(
                f"Requested sample logprobs of {asked}, which is greater than max allowed: {limit}",
                parameter="logprobs",
                value=asked,
            )

    async def _outcomes(self, job: Job, constraint: Constraint | None) -> list[Outcome]:
        outcomes = []
        for choice in job.choices:
            params: SamplingParams = dataclasses.replace(choice.params, constraint=constraint)
            prompt = job.prompts[choice.prompt].text
            try:
                preamble, script = await self._chat_output(job, prompt, params)
                gen = await decide(
                    prompt, params, default_max_tokens=16, preamble=preamble, script=script
                )
            except ConstraintError as exc:
                if job.constraint is None:
                    raise InvalidRequest(f"Invalid tool parameters: {exc}") from None
                raise InvalidRequest(_compile_error(job.constraint, exc)) from None
            outcomes.append(outcome(choice, gen, job))
        return outcomes

    async def _chat_output(
        self, job: Job, prompt: str, params: SamplingParams
    ) -> tuple[str, str | None]:
        """A chat choice's reasoning (its preamble) and tool calls (its script), each from
        its own generator seeded like the text, so a seeded request repeats exactly."""
        if job.chat is None:
            return "", None
        preamble = ""
        if job.chat.reasoning:
            preamble = reasoning.preamble(generation.rng(prompt, params, salt="reasoning"))
        if not job.chat.calls:
            return preamble, None
        rng = generation.rng(prompt, params, salt="tools")
        calls = await off_loop(True, tools.calls, job.chat.calls, rng)  # schema checks: CPU
        return preamble, tools.hermes(calls)

    @contextlib.asynccontextmanager
    async def _running(self, job: Job) -> AsyncIterator[tuple[list[Outcome], Live]]:
        """Admit the job (FIFO queue), generate it, and account for it until it ends."""
        self.check_logprobs(job)
        constraint = await self.constraint(job.constraint) if job.constraint else None
        async with self.scheduler.admit(job.prompt_tokens) as admission:
            outcomes = await self._outcomes(job, constraint)
            # Looked up when scheduled, as vLLM's scheduler does; each prompt of a batch
            # is an engine request of its own.
            lookups = [await self.prefix_cache.lookup_text(p.text, p.tokens) for p in job.prompts]
            cached = sum(lookup.hit for lookup in lookups)
            outcomes = [
                dataclasses.replace(
                    o, cached_tokens=lookups[o.prompt].hit,
                    created_cache_tokens=lookups[o.prompt].created,
                )
                for o in outcomes
            ]  # fmt: skip
            loop = asyncio.get_running_loop()
            latency = self.scheduler.latency
            prefill = job.prompt_tokens - cached
            live = Live(
                prompt_tokens=job.prompt_tokens,
                tokens=sum(o.completion_tokens for o in outcomes),
                steps=max(len(o.steps) for o in outcomes),
                first_at=loop.time() + latency.first_token_s(prefill),
                itl=latency.itl_s,
                prefill_tokens=prefill,
            )
            self._live[id(live)] = live
            self.metrics.scheduled(job, lookups)
            try:
                yield outcomes, live
            except BaseException:
                # Aborted (the client left) or failed: no success is recorded, as in vLLM.
                self.metrics.generation_tokens += live.generated(loop.time())
                raise
            else:
                now = loop.time()
                self.metrics.finished(
                    job, outcomes, queued_s=admission.queued_s, ttft_s=live.first_at - job.arrival,
                    e2e_s=now - job.arrival, prefill_s=latency.first_token_s(prefill),
                    itl_s=latency.itl_s, cached=[lookup.hit for lookup in lookups],
                )  # fmt: skip
            finally:
                del self._live[id(live)]

    async def run(self, job: Job, traceparent: str | None) -> list[Outcome]:
        """A whole (non-streaming) request: done when its last token would be."""
        with self.stats.track(job.request_id, traceparent):
            async with self._running(job) as (outcomes, live):
                await self.scheduler.sleep_generation(live.steps, live.prefill_tokens)
            return outcomes

    # --- pooling (`--runner pooling`) ------------------------------------------------------
    async def pool(
        self, request_id: str, inputs: Sequence[Sequence[int]], arrival: float,
        traceparent: str | None,
    ) -> None:  # fmt: skip
        """Run an embedding request: each input is an engine request of its own, as in
        vLLM, prefilled in one step (pooling has no decode); done when the last one is."""
        with self.stats.track(request_id, traceparent):
            if self.scheduler.faults.claim(1) is not None:  # stalled before its one output
                await self.scheduler.faults.stall()
            await asyncio.gather(*(self._pool_one(len(ids), arrival) for ids in inputs))

    async def _pool_one(self, prompt_tokens: int, arrival: float) -> None:
        loop = asyncio.get_running_loop()
        prefill = self.scheduler.latency.first_token_s(prompt_tokens)
        async with self.scheduler.admit(prompt_tokens) as admission:
            # Its KV cache is held while it prefills; it generates nothing.
            live = Live(prompt_tokens, tokens=0, steps=1, first_at=loop.time() + prefill, itl=0.0)
            self._live[id(live)] = live
            try:
                await asyncio.sleep(prefill)
            finally:
                del self._live[id(live)]
        e2e = loop.time() - arrival
        self.metrics.pooled(
            prompt_tokens, queued_s=admission.queued_s, e2e_s=e2e, prefill_s=prefill
        )

    async def stream(
        self, job: Job, traceparent: str | None
    ) -> AsyncGenerator[list[tuple[Outcome, Step]], None]:
        """A streaming request: per engine step, the step of each sequence still going."""
        with self.stats.track(job.request_id, traceparent, stream=True):
            async with self._running(job) as (outcomes, live):
                async for k in self.scheduler.pace(range(live.steps), live.prefill_tokens):
                    yield [(o, o.steps[k]) for o in outcomes if k < len(o.steps)]


def _compile_error(spec: ConstraintSpec, exc: ConstraintError) -> str:
    """vLLM's text for a constraint its grammar backend cannot compile."""
    if spec.kind in ("regex", "choice"):
        kind = "choices" if spec.kind == "choice" else "regex"
        return f"Failed to transform {kind} into a grammar: {exc}"
    if spec.kind == "grammar":
        return "Invalid grammar specification."
    if isinstance(spec.value, str):
        try:
            orjson.loads(spec.value)
        except orjson.JSONDecodeError:
            return "Invalid JSON grammar specification."
    return f"Failed to transform json schema into a grammar: {exc}"
