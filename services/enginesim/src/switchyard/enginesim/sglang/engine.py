"""The simulated SGLang runtime behind the HTTP routes: its scheduler and output streams.

As in SGLang, a request is handed to the engine and runs on its own (a task here, a
scheduler process there) while the HTTP handler reads its outputs; an abort, from
`/abort_request` or a client that went away, ends it wherever it is:

- queued or still loading: finish_reason `{"type":"abort","message":"Abort in waiting queue"}`;
- running: `{"type":"abort","message":"Aborted","status_code":null,"err_type":null}`;
- refused by a full queue: `{"type":"abort","status_code":503,"message":"The request queue is full."}`;
- a grammar that does not compile: an abort with status 400 and err_type BadRequestError.

Outputs are coalesced like SGLang's `ReqState`: a reader that falls behind gets one
update with everything new, so memory per request stays bounded by its output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from typing import Any, Final

from switchyard.enginesim import generation, tokenizer
from switchyard.enginesim.generation import Generation
from switchyard.enginesim.scheduler import QueueFull, Scheduler
from switchyard.enginesim.sglang.metrics import SglangMetrics, Throughput
from switchyard.enginesim.sglang.prompts import LARGE, off_loop
from switchyard.enginesim.sglang.sampling import Sampling
from switchyard.enginesim.stats import SimStats
from switchyard.enginesim.structured import ConstraintError

FinishReason = dict[str, Any]

#: Generations longer than this (tokens) are decided on a worker thread.
_LARGE_OUTPUT: Final = 2048
_QUEUED_ABORT: Final[FinishReason] = {"type": "abort", "message": "Abort in waiting queue"}


@dataclass(frozen=True, slots=True)
class Job:
    """One request, validated and tokenised by the HTTP layer."""

    rid: str
    prompt: str
    prompt_tokens: int
    sampling: Sampling
    max_new_tokens: int  # the scheduler's budget (see limits.ContextLimits)
    stream: bool
    traceparent: str | None = None


@dataclass(slots=True)
class Update:
    """What a request produced since the previous update."""

    text: str
    ids: list[int]
    completion_tokens: int  # cumulative
    finish_reason: FinishReason | None
    #: Whether the request reached the scheduler's output path: its meta_info then has
    #: prompt_tokens and friends; an abort before that has only id, finish_reason, ...
    scheduled: bool
    first: bool
    e2e_latency: float = 0.0


@dataclass(eq=False, slots=True)
class _Request:
    job: Job
    arrived: float = field(default_factory=time.perf_counter)
    task: asyncio.Task[None] | None = None
    started: bool = False
    abort_pending: bool = False  # aborted before its task ran
    admitted: bool = False
    scheduled: bool = False
    generated: int = 0
    pending_text: list[str] = field(default_factory=list)
    pending_ids: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    e2e_latency: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    read_once: bool = False

    def push(self, text: str, token_id: int) -> None:
        self.generated += 1
        if text:
            self.pending_text.append(text)
        self.pending_ids.append(token_id)
        self.changed.set()

    def end(self, reason: FinishReason) -> None:
        if self.finish is None:
            self.finish = reason
            self.e2e_latency = time.perf_counter() - self.arrived
            self.changed.set()
            self.done.set()

    def take(self) -> Update:
        update = Update(
            text="".join(self.pending_text),
            ids=self.pending_ids,
            completion_tokens=self.generated,
            finish_reason=self.finish,
            scheduled=self.scheduled,
            first=not self.read_once,
            e2e_latency=self.e2e_latency,
        )
        self.pending_text = []
        self.pending_ids = []
        self.read_once = True
        return update


class Handle:
    """The reading end of one submitted request."""

    def __init__(self, engine: SglangEngine, request: _Request) -> None:
        self._engine = engine
        self._request = request

    @property
    def rid(self) -> str:
        return self._request.job.rid

    @property
    def finished(self) -> bool:
        return self._request.finish is not None

    async def updates(self) -> AsyncGenerator[Update, None]:
        """Updates as they come (coalesced when the reader is slower), the last with the finish."""
        request = self._request
        while True:
            await request.changed.wait()
            request.changed.clear()
            if not (request.pending_ids or request.pending_text or request.finish):
                continue
            update = request.take()
            yield update
            if update.finish_reason is not None:
                return

    async def result(self) -> Update:
        """The whole output, once finished."""
        await self._request.done.wait()
        return self._request.take()

    def abort(self) -> None:
        """The client went away: abort, as SGLang does on a disconnect."""
        if not self.finished:
            self._engine.abort(self.rid)


class SglangEngine:
    def __init__(
        self,
        scheduler: Scheduler,
        stats: SimStats,
        *,
        max_total_tokens: int,
        default_seed: int | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.stats = stats
        self.metrics: SglangMetrics | None = None
        self.max_total_tokens = max_total_tokens
        self._default_seed = default_seed
        self._requests: dict[str, _Request] = {}
        self._used_tokens = 0
        self._throughput = Throughput()

    # The scheduler's live state, for /metrics and /server_info.
    @property
    def running(self) -> int:
        return self.scheduler.running

    @property
    def waiting(self) -> int:
        return self.scheduler.waiting

    @property
    def used_tokens(self) -> int:
        return self._used_tokens

    def gen_throughput(self) -> float:
        return self._throughput.rate()

    def submit(self, job: Job) -> Handle:
        """Start a request; ValueError if its rid is in use (SGLang's message)."""
        if job.rid in self._requests:
            raise ValueError(f"Duplicate request ID detected: {job.rid}")
        request = _Request(job)
        self._requests[job.rid] = request
        request.task = asyncio.create_task(self._run(request), name=f"sglang-{job.rid}")
        return Handle(self, request)

    def abort(self, rid: str) -> bool:
        """Abort a live request (`/abort_request`, disconnects); False if there is none."""
        request = self._requests.get(rid)
        if request is None or request.task is None or request.finish is not None:
            return False
        if self.metrics is not None:
            self.metrics.aborted()
        if request.started:
            request.task.cancel()
        else:  # a task cancelled before its first step would skip its own clean-up
            request.abort_pending = True
        return True

    def abort_all(self) -> int:
        return sum(self.abort(rid) for rid in list(self._requests))

    async def _run(self, request: _Request) -> None:
        job = request.job
        request.started = True
        try:
            with self.stats.track(job.rid, job.traceparent, stream=job.stream):
                if request.abort_pending:
                    raise asyncio.CancelledError
                gen = await self._decide(request)
                await self.scheduler.wait_loaded()
                async with self.scheduler.admit(job.prompt_tokens):
                    request.admitted = request.scheduled = True
                    await self._generate(request, gen)
        except QueueFull as exc:
            request.end({"type": "abort", "status_code": 503, "message": str(exc)})
        except ConstraintError as exc:
            key = job.sampling.grammar.key if job.sampling.grammar else "grammar"
            message = f"Failed to compile {key} grammar: {exc}"
            request.end(_abort(message, 400, "BadRequestError"))
        except asyncio.CancelledError:
            # Aborted on purpose (engine.abort): end the output instead of propagating.
            request.end(_abort("Aborted") if request.admitted else dict(_QUEUED_ABORT))
        finally:
            self._requests.pop(job.rid, None)
            if request.admitted and self.metrics is not None:
                self.metrics.finished(
                    job.stream, job.prompt_tokens, request.generated, request.e2e_latency
                )

    async def _decide(self, request: _Request) -> Generation:
        """The whole completion, decided up front (grammar errors surface here)."""
        job = request.job
        heavy = job.max_new_tokens > _LARGE_OUTPUT or len(job.prompt) > LARGE
        try:
            return await off_loop(heavy, self._generation, job)
        except ConstraintError:
            request.scheduled = True  # SGLang compiles grammars in the scheduler
            raise

    def _generation(self, job: Job) -> Generation:
        params = job.sampling.generation_params(job.max_new_tokens)
        if job.sampling.grammar is not None:
            params = replace(params, constraint=job.sampling.grammar.build())
        return generation.generate(
            job.prompt,
            params,
            default_max_tokens=job.max_new_tokens,
            default_seed=self._default_seed,
        )

    async def _generate(self, request: _Request, gen: Generation) -> None:
        job = request.job
        ids = _output_ids(gen)
        finish = _finish_reason(gen, job.max_new_tokens)
        pieces = gen.tokens
        metrics = self.metrics
        self._used_tokens += job.prompt_tokens
        last = request.arrived
        try:
            if not ids:  # nothing to generate: the prefill alone
                await self.scheduler.sleep_generation(0, job.prompt_tokens)
            async for i in self.scheduler.pace(range(len(ids)), job.prompt_tokens):
                now = time.perf_counter()
                if metrics is not None:
                    if i == 0:
                        metrics.first_token(job.stream, now - request.arrived)
                    else:
                        metrics.inter_token(now - last)
                last = now
                self._used_tokens += 1
                self._throughput.add()
                request.push(pieces[i] if i < len(pieces) else "", ids[i])
            request.end(finish)
        finally:
            self._used_tokens -= job.prompt_tokens + request.generated


def _abort(
    message: str, status_code: int | None = None, err_type: str | None = None
) -> FinishReason:
    """SGLang's FINISH_ABORT.to_json()."""
    return {"type": "abort", "message": message, "status_code": status_code, "err_type": err_type}


def _finish_reason(gen: Generation, max_new_tokens: int) -> FinishReason:
    if gen.finish_reason == "length":
        return {"type": "length", "length": max_new_tokens}
    if gen.matched_stop is not None:
        return {"type": "stop", "matched": gen.matched_stop}
    return {"type": "stop", "matched": tokenizer.EOS_TOKEN_ID}


def _output_ids(gen: Generation) -> list[int]:
    """One id per generated token, as SGLang reports output_ids (EOS included).

    The tokens that completed a stop string are not in `gen` (the text stops before
    them); the stop string's own ids stand in for them.
    """
    ids = list(gen.token_ids)
    if gen.eos:
        ids.append(tokenizer.EOS_TOKEN_ID)
    elif gen.matched_stop and len(ids) < gen.completion_tokens:
        tail = tokenizer.encode(gen.matched_stop)
        while len(ids) < gen.completion_tokens:
            ids.extend(tail)
    return ids[: gen.completion_tokens]
