"""The simulated SGLang runtime behind the HTTP routes: its scheduler and output streams.

As in SGLang, a request is handed to the engine and runs on its own (a task here, a
scheduler process there) while the HTTP handler reads its outputs; an abort, from
`/abort_request` or a client that went away, ends it wherever it is:

- queued or still loading: finish_reason `{"type":"abort","message":"Abort in waiting queue"}`;
- running: `{"type":"abort","message":"Aborted","status_code":null,"err_type":null}`;
- refused by a full queue: `{"type":"abort","status_code":503,"message":"The request queue is full."}`;
- a grammar that does not compile: an abort with status 400 and err_type BadRequestError.

Request ids (`rid`) follow SGLang's tokenizer manager and scheduler:

- a rid is held from the moment a request arrives (before tokenizing and validation) until
  it finishes; a second request with a held rid is refused, "Duplicate request ID detected";
- an abort by rid is dispatched only if the rid is held, once per request, and then ends
  every live request whose rid *starts with* it (the scheduler matches by prefix);
- after a streamed response ends, SGLang aborts its rid(s) again `abort_delay_s` (2 s)
  later (`create_abort_task`), hitting whatever request holds that rid by then.

Seeds follow the sampler: `sampling_seed` counts only with --enable-deterministic-inference,
where a request without one samples with seed 42; otherwise every request samples freshly
(or from the simulator's --sim-seed, for reproducible test runs).

Outputs are coalesced like SGLang's `ReqState`: a reader that falls behind gets one
update with everything new, so memory per request stays bounded by its output.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

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
#: The seed SGLang's deterministic sampler gives requests that bring none.
DETERMINISTIC_DEFAULT_SEED: Final = 42
#: Seconds after a stream's end before SGLang aborts its rid (`create_abort_task`).
STREAM_END_ABORT_DELAY_S: Final = 2.0
_RECENT_ABORTS: Final = 256

#: Who asked: `/abort_request`, its `abort_all`, a client that went away, the abort after a
#: stream's end, or a request refused after some of its prompts had started.
AbortSource = Literal["abort_request", "abort_all", "disconnect", "stream_end", "failure"]


@dataclass(frozen=True, slots=True)
class AbortRecord:
    """One abort the engine was asked for, and the live requests it ended."""

    rid: str
    source: AbortSource
    ended: tuple[str, ...]


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

    def abort(self, source: AbortSource = "disconnect") -> None:
        """Abort unless finished (by default: the client went away, as SGLang does then)."""
        if not self.finished:
            self._engine.abort(self.rid, source)


class SglangEngine:
    def __init__(
        self,
        scheduler: Scheduler,
        stats: SimStats,
        *,
        max_total_tokens: int,
        default_seed: int | None = None,
        deterministic: bool = False,
        abort_delay_s: float = STREAM_END_ABORT_DELAY_S,
    ) -> None:
        self.scheduler = scheduler
        self.stats = stats
        self.metrics: SglangMetrics | None = None
        self.max_total_tokens = max_total_tokens
        self._default_seed = default_seed
        self.deterministic = deterministic
        self.abort_delay_s = abort_delay_s
        #: How the stream-end abort waits out its delay: a clock tests may replace.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        #: The aborts asked for, newest last (what tests and /sim/aborts look at).
        self.aborts: deque[AbortRecord] = deque(maxlen=_RECENT_ABORTS)
        #: SGLang's `rid_to_state`: every held rid, and whether an abort was sent for it.
        self._held: dict[str, bool] = {}
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

    @property
    def live_rids(self) -> tuple[str, ...]:
        """The rids of the requests submitted and not finished, oldest first."""
        return tuple(self._requests)

    def gen_throughput(self) -> float:
        return self._throughput.rate()

    def hold(self, rids: Sequence[str]) -> None:
        """Take `rids` for a request that just arrived (`_init_req_state`); ValueError with
        SGLang's message if one is held already, or repeated."""
        seen: set[str] = set()
        for rid in rids:
            if rid in self._held or rid in seen:
                raise ValueError(f"Duplicate request ID detected: {rid}")
            seen.add(rid)
        self._held.update(dict.fromkeys(rids, False))

    def release(self, rid: str) -> None:
        """Give back a held rid whose request never reached the scheduler (refused)."""
        if rid not in self._requests:
            self._held.pop(rid, None)

    def submit(self, job: Job) -> Handle:
        """Start a request whose rid the caller holds (or hold it now: ValueError if live)."""
        if job.rid in self._requests or job.rid not in self._held:
            self.hold([job.rid])
        request = _Request(job)
        self._requests[job.rid] = request
        request.task = asyncio.create_task(self._run(request), name=f"sglang-{job.rid}")
        return Handle(self, request)

    def abort(self, rid: str, source: AbortSource = "abort_request") -> bool:
        """SGLang's `abort_request(rid)`: dispatched only for a held rid, once; it then ends
        every live request whose rid starts with `rid`. False if nothing was dispatched."""
        if not rid or self._held.get(rid, True):  # not held, or already sent
            self.aborts.append(AbortRecord(rid, source, ()))
            return False
        self._held[rid] = True
        if self.metrics is not None:
            self.metrics.aborted()
        ended = tuple(r for r in list(self._requests) if r.startswith(rid) and self._cancel(r))
        self.aborts.append(AbortRecord(rid, source, ended))
        return True

    def abort_all(self) -> int:
        """`abort_request(abort_all=True)`: one dispatch that ends every live request."""
        if self.metrics is not None:
            self.metrics.aborted()
        ended = tuple(r for r in list(self._requests) if self._cancel(r))
        self.aborts.append(AbortRecord("", "abort_all", ended))
        return len(ended)

    async def abort_after_stream(self, rids: Sequence[str]) -> None:
        """`create_abort_task`: a streamed response has ended; after the delay, abort its
        rids in whatever request holds them by then."""
        await self.sleep(self.abort_delay_s)
        for rid in rids:
            self.abort(rid, "stream_end")

    def _finish(self, request: _Request, reason: FinishReason) -> None:
        """The request's last output: its rid is free from now on (SGLang drops the state
        when the finished output arrives, before the handler has read it)."""
        if request.finish is None:
            request.end(reason)
            self._forget(request)

    def _forget(self, request: _Request) -> None:
        rid = request.job.rid
        if self._requests.get(rid) is request:  # not a newer request with the same rid
            del self._requests[rid]
            self._held.pop(rid, None)

    def _cancel(self, rid: str) -> bool:
        request = self._requests[rid]
        if request.task is None or request.finish is not None:
            return False
        if request.started:
            request.task.cancel()
        else:  # a task cancelled before its first step would skip its own clean-up
            request.abort_pending = True
        return True

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
            self._finish(request, {"type": "abort", "status_code": 503, "message": str(exc)})
        except ConstraintError as exc:
            key = job.sampling.grammar.key if job.sampling.grammar else "grammar"
            message = f"Failed to compile {key} grammar: {exc}"
            self._finish(request, _abort(message, 400, "BadRequestError"))
        except asyncio.CancelledError:
            # Aborted on purpose (engine.abort): end the output instead of propagating.
            self._finish(request, _abort("Aborted") if request.admitted else dict(_QUEUED_ABORT))
        finally:
            self._forget(request)  # after an unexpected error too: never leak a held rid
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
            replace(params, seed=self._seed(job.sampling.seed)),
            default_max_tokens=job.max_new_tokens,
            default_seed=None if self.deterministic else self._default_seed,
        )

    def _seed(self, requested: int | None) -> int | None:
        """The seed the sampler uses: SGLang reads `sampling_seed` only in deterministic
        mode (42 when the request has none) and ignores it otherwise."""
        if not self.deterministic:
            return None
        return DETERMINISTIC_DEFAULT_SEED if requested is None else requested

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
            self._finish(request, finish)
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
