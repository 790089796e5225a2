"""The simulated vLLM engine: admission, the constraint, generation, and pacing.

vLLM counts every unfinished request (running or waiting) against `--max-num-queued-reqs`
and refuses past it (`AsyncLLM.check_admission`), while the scheduler runs at most
`--max-num-seqs` at once and queues the rest in order. Each running request is kept as a
`Live` timeline, so metrics read the KV-cache use and the tokens generated so far at any
moment without per-token work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from switchyard.enginesim.generation import Generation, SamplingParams, generate
from switchyard.enginesim.scheduler import Admission, Scheduler
from switchyard.enginesim.structured import Constraint, ConstraintError
from switchyard.enginesim.vllm.errors import InvalidRequest, QueueOverflow
from switchyard.enginesim.vllm.inputs import ConstraintSpec, Job
from switchyard.enginesim.vllm.metrics import VllmMetrics

_CONSTRAINT_CACHE: Final = 128
_INLINE_TOKENS: Final = 2048  # bigger generations are computed off the event loop


@dataclass(frozen=True, slots=True)
class Step:
    """What one engine step adds to a sequence."""

    text: str
    tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None


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


def _stop_at_token(
    gen: Generation, stop_token_ids: frozenset[int]
) -> tuple[Generation, int | None]:
    """Cut at the first generated token in `stop_token_ids` (it counts, its text is not shown)."""
    for i, tid in enumerate(gen.token_ids):
        if tid in stop_token_ids:
            return Generation(gen.tokens[:i], gen.token_ids[:i], "stop", None, i + 1), tid
    return gen, None


def outcome(index: int, prompt: int, gen: Generation, job: Job) -> Outcome:
    """A sequence's steps: one per token shown, then one for the tokens that ended it
    (EOS, or what completed a stop string), which carries the finish reason."""
    stop_reason: str | int | None = gen.matched_stop
    if job.stop_token_ids:
        gen, stop_id = _stop_at_token(gen, job.stop_token_ids)
        if stop_id is not None:
            stop_reason = stop_id
    suffix = gen.matched_stop if job.include_stop_str_in_output and gen.matched_stop else ""
    steps = [Step(piece, 1) for piece in gen.tokens]
    extra = gen.completion_tokens - len(gen.tokens)
    if extra > 0 or not steps:
        steps.append(Step(suffix, max(extra, 0), gen.finish_reason, stop_reason))
    else:
        last = steps[-1]
        steps[-1] = Step(last.text + suffix, last.tokens, gen.finish_reason, stop_reason)
    return Outcome(
        index=index,
        prompt=prompt,
        text=gen.text + suffix,
        steps=tuple(steps),
        finish_reason=gen.finish_reason,
        stop_reason=stop_reason,
        completion_tokens=gen.completion_tokens,
    )


@dataclass(slots=True)
class Live:
    """A running request's timeline: its first token at `first_at`, then one step per `itl`."""

    prompt_tokens: int
    tokens: int
    steps: int
    first_at: float
    itl: float

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
        self._engine = engine
        self._n = n
        engine.unfinished += n
        engine.requests += 1

    def release(self) -> None:
        if self._n:
            self._engine.unfinished -= self._n
            self._engine.requests -= 1
            self._n = 0


class Engine:
    def __init__(
        self,
        scheduler: Scheduler,
        metrics: VllmMetrics,
        *,
        max_num_queued_reqs: int | None,
        block_size: int,
        num_gpu_blocks: int,
    ) -> None:
        self.scheduler = scheduler
        self.metrics = metrics
        self.max_num_queued_reqs = max_num_queued_reqs
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.unfinished = 0
        self.requests = 0
        self._live: dict[int, Live] = {}
        self._constraints: OrderedDict[str, Constraint] = OrderedDict()
        metrics.bind(self)

    # --- admission -------------------------------------------------------------------
    def ticket(self, n: int) -> Ticket:
        """Count a request as unfinished, or refuse it when the limit is reached."""
        limit = self.max_num_queued_reqs
        if limit is not None and self.unfinished + n > limit:
            self.metrics.admission_rejected("max_num_queued_reqs")
            raise QueueOverflow()
        return Ticket(self, n)

    # --- what metrics read at scrape time ----------------------------------------------
    def kv_cache_usage(self, now: float) -> float:
        if not self._live:
            return 0.0
        blocks = sum(
            math.ceil((live.prompt_tokens + live.generated(now)) / self.block_size)
            for live in self._live.values()
        )
        return min(1.0, blocks / self.num_gpu_blocks)

    def generating(self, now: float) -> int:
        """Tokens generated so far by the running requests."""
        return sum(live.generated(now) for live in self._live.values())

    # --- the constraint ----------------------------------------------------------------
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

    async def _params(self, job: Job) -> list[SamplingParams]:
        params = [choice.params for choice in job.choices]
        if job.constraint is None:
            return params
        constraint = await self.constraint(job.constraint)
        return [dataclasses.replace(p, constraint=constraint) for p in params]

    # --- generation ----------------------------------------------------------------------
    async def _generate(self, job: Job, params: Sequence[SamplingParams]) -> list[Outcome]:
        def run() -> list[Outcome]:
            outcomes = []
            for choice, p in zip(job.choices, params, strict=True):
                try:
                    gen = generate(job.prompts[choice.prompt].text, p, default_max_tokens=16)
                except ConstraintError as exc:
                    assert job.constraint is not None
                    raise InvalidRequest(_compile_error(job.constraint, exc)) from None
                outcomes.append(outcome(choice.index, choice.prompt, gen, job))
            return outcomes

        budget = sum(p.max_tokens or 0 for p in params)
        if len(params) == 1 and budget <= _INLINE_TOKENS:
            return run()
        return await asyncio.to_thread(run)

    @contextlib.asynccontextmanager
    async def _running(self, job: Job) -> AsyncIterator[tuple[list[Outcome], Live]]:
        """Admit the job (FIFO queue), generate it, and account for it until it ends."""
        params = await self._params(job)
        async with self.scheduler.admit(job.prompt_tokens) as admission:
            outcomes = await self._generate(job, params)
            loop = asyncio.get_running_loop()
            first_at = loop.time() + self.scheduler.latency.first_token_s(job.prompt_tokens)
            live = Live(
                prompt_tokens=job.prompt_tokens,
                tokens=sum(o.completion_tokens for o in outcomes),
                steps=max(len(o.steps) for o in outcomes),
                first_at=first_at,
                itl=self.scheduler.latency.itl_s,
            )
            key = id(live)
            self._live[key] = live
            self.metrics.scheduled(job)
            try:
                yield outcomes, live
            except BaseException:
                # Aborted (the client left) or failed: no success is recorded, as in vLLM.
                self.metrics.aborted(live.generated(loop.time()))
                raise
            else:
                self._finished(job, outcomes, live, admission, loop.time())
            finally:
                del self._live[key]

    def _finished(
        self, job: Job, outcomes: list[Outcome], live: Live, admission: Admission, now: float
    ) -> None:
        latency = self.scheduler.latency
        prefill_s = latency.first_token_s(job.prompt_tokens)
        self.metrics.finished(
            job,
            outcomes,
            queued_s=admission.queued_s,
            ttft_s=live.first_at - job.arrival,
            e2e_s=now - job.arrival,
            prefill_s=prefill_s,
            itl_s=latency.itl_s,
        )

    async def run(self, job: Job) -> list[Outcome]:
        """A whole (non-streaming) request: done when its last token would be."""
        async with self._running(job) as (outcomes, live):
            await self.scheduler.sleep_generation(live.steps, job.prompt_tokens)
        return outcomes

    async def stream(self, job: Job) -> AsyncGenerator[list[tuple[Outcome, Step]], None]:
        """A streaming request: per engine step, the step of each sequence still going."""
        async with self._running(job) as (outcomes, live):
            async for k in self.scheduler.pace(range(live.steps), job.prompt_tokens):
                yield [(o, o.steps[k]) for o in outcomes if k < len(o.steps)]


def _compile_error(spec: ConstraintSpec, exc: ConstraintError) -> str:
    """vLLM's text for a constraint its grammar backend cannot compile."""
    if spec.kind == "regex":
        return f"Failed to transform regex into a grammar: {exc}"
    if spec.kind == "choice":
        return f"Failed to transform choices into a grammar: {exc}"
    if spec.kind == "grammar":
        return "Invalid grammar specification."
    if isinstance(spec.value, str):
        try:
            orjson.loads(spec.value)
        except orjson.JSONDecodeError:
            return "Invalid JSON grammar specification."
    return f"Failed to transform json schema into a grammar: {exc}"
