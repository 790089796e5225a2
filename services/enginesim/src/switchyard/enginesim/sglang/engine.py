"""The simulated SGLang runtime: its scheduler, request ids, a request's checks and its outputs.

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
(or from the simulator's --sim-seed, for reproducible test runs). Each of a prompt's `n`
samples is its own request, drawing as if seeded with seed + its index, so they differ.

When scheduled, a request's prompt is looked up in the radix cache (`prefix_cache`, pages of
`--page-size` tokens, `--max-total-tokens` in all, off with `--disable-radix-cache`): its
`cached_tokens` are not prefilled again, so time to first token pays for the rest only.

A chat turn (`Turn`) may make the model think first (`<think>...</think>`) and write tool
calls instead of an answer; both are output tokens like any, reasoning ones counted in
`reasoning_tokens`. Logprobs, when asked for, are decided with the output, one per output
token (EOS included), and a prompt's from `logprob_start_len` on.

Outputs are coalesced like SGLang's `ReqState`: a reader that falls behind gets one `Step`
with everything new, so memory per request stays bounded by its output. SGLang is
`Starting` (its probes answer 503) until the model is loaded; generation requests sent
meanwhile are accepted and served once it is.

A request becomes a `Job` in SGLang's order: the context-length rules (the tokenizer
manager's `_validate_one_request`, the scheduler's `init_req_max_new_tokens`), then
`SamplingParams` normalisation and `verify()`, with SGLang's messages; native
`sampling_params` and the OpenAI routes' converted ones alike. Refusals are ValueErrors
(HTTP 400); a key SGLang's `SamplingParams` does not have is a TypeError there (an HTTP
500), so it is one here too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, Literal

from switchyard.enginesim import generation, reasoning, tokenizer, tools
from switchyard.enginesim.generation import LARGE_TEXT, Generation, Prompt, decide, off_loop
from switchyard.enginesim.logprobs import Alternative, TokenLogprob, logprobs
from switchyard.enginesim.prefix_cache import PrefixCache
from switchyard.enginesim.scheduler import QueueFull, Scheduler
from switchyard.enginesim.sglang.flags import Config
from switchyard.enginesim.sglang.metrics import Metrics, Throughput
from switchyard.enginesim.stats import SimStats
from switchyard.enginesim.structured import (
    Constraint,
    ConstraintError,
    ConstraintKind,
    UnsupportedConstraint,
)

FinishReason = dict[str, Any]

_QUEUED_ABORT: Final[FinishReason] = {"type": "abort", "message": "Abort in waiting queue"}
#: Logprob work (tokens times alternatives) above which it runs off the event loop.
_LARGE_LOGPROBS: Final = 20000
#: The seed SGLang's deterministic sampler gives requests that bring none.
DETERMINISTIC_DEFAULT_SEED: Final = 42
_RECENT_ABORTS: Final = 256

#: Who asked: `/abort_request`, its `abort_all`, a client that went away, the abort after a
#: stream's end, or a request refused after some of its prompts had started.
AbortSource = Literal["abort_request", "abort_all", "disconnect", "stream_end", "failure"]
TOP_K_ALL: Final = 1 << 30
MAX_STOP_COUNT: Final = 32
_EPS: Final = 1e-6
#: What `SamplingParams(**kwargs)` accepts (its API fields).
FIELDS: Final = frozenset(
    {
        "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p",
        "top_k", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty",
        "min_new_tokens", "n", "beam_width", "json_schema", "regex", "ebnf", "structural_tag",
        "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
        "stream_interval", "logit_bias", "sampling_seed", "custom_params", "watermark",
    }
)  # fmt: skip
#: The constraint keys, and the grammar SGLang names in "Failed to compile <key> grammar".
_GRAMMARS: Final = {
    "json_schema": "json", "regex": "regex", "ebnf": "ebnf", "structural_tag": "structural_tag",
}  # fmt: skip
_KINDS: Final[dict[str, ConstraintKind]] = {
    "json": "json_schema",
    "regex": "regex",
    "ebnf": "grammar",
}


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A structured-output request, compiled by the engine (failures abort with 400)."""

    key: str  # "json", "regex", "ebnf" or "structural_tag"
    value: str

    def build(self) -> Constraint:
        """The simulator's constraint; raises ConstraintError like a failed grammar compile."""
        if self.key not in _KINDS:
            raise UnsupportedConstraint(f"the simulator cannot generate a {self.key} output")
        return Constraint(_KINDS[self.key], self.value)


@dataclass(frozen=True, slots=True)
class Sampling:
    """Verified sampling parameters, as the simulated model uses them."""

    max_new_tokens: int | None
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    temperature: float = 1.0  # 0.0: greedy (SGLang: top_k == 1)
    top_p: float = 1.0
    top_k: int = -1  # -1: the whole vocabulary
    ignore_eos: bool = False
    seed: int | None = None
    grammar: GrammarSpec | None = None

    def generation_params(self, max_tokens: int, seed: int | None) -> generation.SamplingParams:
        """The core's parameters, with the engine's token budget and the sampler's seed."""
        return generation.SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=seed,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
            min_tokens=min(self.min_new_tokens, max_tokens),
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """What a chat turn makes the model write besides free text (the chat route decides):
    a reasoning segment first, then calls of these tools instead of an answer, as its own
    `<tool_call>` blocks, or as the JSON array SGLang constrains required calls to when it
    has no tool-call parser."""

    think: bool = False
    calls: tuple[tools.Tool, ...] = ()
    call_format: Literal["hermes", "json"] = "hermes"


#: A turn of free text only (every request but a chat with thinking or tools).
PLAIN: Final = Turn()


@dataclass(frozen=True, slots=True)
class LogprobRequest:
    """`return_logprob` with its `top_logprobs_num` and `logprob_start_len` (-1: output only)."""

    top: int = 0
    start: int = -1
    #: Whether each entry carries its token's text (`return_text_in_logprobs`).
    text: bool = False


#: One entry of SGLang's logprob lists: (logprob, token id, text or None).
LogprobEntry = tuple[float | None, int, str | None]


@dataclass(frozen=True, slots=True)
class Job:
    """One request, validated and tokenised, as the engine runs it."""

    rid: str
    prompt: Prompt
    sampling: Sampling
    max_new_tokens: int  # the scheduler's budget (see `budget`)
    stream: bool
    traceparent: str | None = None
    #: The sample's place among a prompt's `n` (it samples as if seeded with seed + index).
    index: int = 0
    turn: Turn = PLAIN
    logprobs: LogprobRequest | None = None
    #: The prompt's logprob entries from `logprob_start_len` on, with their top alternatives.
    input_logprobs: tuple[tuple[LogprobEntry, list[LogprobEntry] | None], ...] = ()
    #: Tokens the prompt's images count for (in `prompt.tokens` too).
    image_tokens: int = 0


def parse_sampling(params: Mapping[str, Any]) -> Sampling:
    """Build, normalise and verify, in SGLang's order; ValueError with its message."""
    unexpected = sorted(set(params) - FIELDS)
    if unexpected:
        raise TypeError(f"Unexpected keyword argument {unexpected[0]!r}")

    def number(name: str, default: float) -> float:  # __post_init__: None is the default
        return default if params.get(name) is None else float(params[name])

    temperature, top_p = number("temperature", 1.0), number("top_p", 1.0)
    top_k = int(number("top_k", TOP_K_ALL))
    min_p, frequency = number("min_p", 0.0), number("frequency_penalty", 0.0)
    presence, repetition = number("presence_penalty", 0.0), number("repetition_penalty", 1.0)
    min_new, max_new = int(number("min_new_tokens", 0)), params.get("max_new_tokens", 128)
    if 0 <= temperature < _EPS:
        temperature, top_k = 1.0, 1  # greedy
    top_k = TOP_K_ALL if top_k == -1 else top_k
    stop = params.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_COUNT:  # normalize()
        raise ValueError(f"at most {MAX_STOP_COUNT} stop strings are allowed, got {len(stops)}")
    beam_width, seed = params.get("beam_width"), params.get("sampling_seed")
    rules = (  # verify()
        (beam_width is not None and beam_width < 1, f"beam_width must be at least 1, got {beam_width}."),
        (not math.isfinite(temperature) or temperature < 0.0, f"temperature must be a non-negative finite number, got {temperature}."),
        (not 0.0 < top_p <= 1.0, f"top_p must be in (0, 1], got {top_p}."),
        (not 0.0 <= min_p <= 1.0, f"min_p must be in [0, 1], got {min_p}."),
        (top_k < 1, f"top_k must be -1 (disable) or at least 1, got {top_k}."),
        (not -2.0 <= frequency <= 2.0, f"frequency_penalty must be in [-2, 2], got {frequency}."),
        (not -2.0 <= presence <= 2.0, f"presence_penalty must be in [-2, 2], got {presence}."),
        (not 0.0 < repetition <= 2.0, f"repetition_penalty must be in (0, 2] (1.0 = no penalty), got {repetition}."),
        (min_new < 0, f"min_new_tokens must be in [0, max_new_tokens], got {min_new}."),
        (max_new is not None and max_new < 0, f"max_new_tokens must be at least 0, got {max_new}."),
        (max_new is not None and min_new > max_new, f"min_new_tokens must be in [0, max_new_tokens({max_new})], got {min_new}."),
    )  # fmt: skip
    for broken, message in rules:
        if broken:
            raise ValueError(message)
    for token_id in params.get("logit_bias") or {}:
        if not 0 <= int(token_id) < tokenizer.VOCAB_SIZE:
            raise ValueError(
                f"logit_bias must has keys in [0, {tokenizer.VOCAB_SIZE - 1}], got {token_id}."
            )
    if seed is not None and not -(2**63) <= seed <= 2**63 - 1:
        raise ValueError(f"sampling_seed must be in [-2**63, 2**63 - 1], got {seed}.")
    grammars = [(key, params[name]) for name, key in _GRAMMARS.items() if params.get(name)]
    if len(grammars) > 1:
        raise ValueError("Only one of json_schema, regex, ebnf, or structural_tag can be set.")
    grammar = GrammarSpec(grammars[0][0], str(grammars[0][1])) if grammars else None
    return Sampling(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        stop=tuple(stops),
        temperature=0.0 if top_k == 1 else temperature,
        top_p=top_p,
        top_k=-1 if top_k == TOP_K_ALL else top_k,
        ignore_eos=bool(params.get("ignore_eos")),
        seed=seed,
        grammar=grammar,
    )


def _truncated(text: str, keep: int) -> Prompt:
    """The first `keep` tokens of `text` (SGLang's --allow-auto-truncate)."""
    return Prompt(tokenizer.decode(tokenizer.encode(text)[:keep]), keep)


@dataclass(frozen=True, slots=True)
class AbortRecord:
    """One abort the engine was asked for, and the live requests it ended."""

    rid: str
    source: AbortSource
    ended: tuple[str, ...]


@dataclass(slots=True)
class Step:
    """What a request produced since the previous read (the last one: its finish)."""

    text: str
    ids: list[int]
    completion_tokens: int  # cumulative
    finish_reason: FinishReason | None
    #: Whether the request reached the scheduler's output path: its meta_info then has
    #: prompt_tokens and friends; an abort before that has only id, finish_reason, ...
    scheduled: bool
    first: bool
    e2e_latency: float = 0.0
    #: The text of each new token (`text` joined), for the chat route's parsers.
    pieces: list[str] = field(default_factory=list)
    #: The new tokens' logprobs, when the request asked for them.
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: Output tokens so far that are reasoning (`<think>` to `</think>`, both included).
    reasoning_tokens: int = 0
    #: Prompt tokens served from the radix cache (0 until scheduled).
    cached_tokens: int = 0


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
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    #: How many output tokens are reasoning, once decided; counted as they come.
    thinking: int = 0
    finish: FinishReason | None = None
    e2e_latency: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    read_once: bool = False
    #: Every output token's logprob, decided with the output (when asked for).
    logprobs: tuple[TokenLogprob, ...] = ()
    #: Prompt tokens found in the radix cache when it was scheduled.
    cached_tokens: int = 0

    def push(self, text: str, token_id: int, logprob: TokenLogprob | None = None) -> None:
        self.generated += 1
        if text:
            self.pending_text.append(text)
        self.pending_ids.append(token_id)
        if logprob is not None:
            self.pending_logprobs.append(logprob)
        self.changed.set()

    def end(self, reason: FinishReason) -> None:
        self.finish = reason
        self.e2e_latency = time.perf_counter() - self.arrived
        self.changed.set()
        self.done.set()

    def take(self) -> Step:
        step = Step(
            "".join(self.pending_text), self.pending_ids, self.generated, self.finish,
            self.scheduled, not self.read_once, self.e2e_latency, self.pending_text,
            self.pending_logprobs, min(self.thinking, self.generated), self.cached_tokens,
        )  # fmt: skip
        self.pending_text, self.pending_ids, self.read_once = [], [], True
        self.pending_logprobs = []
        return step


class Handle:
    """The reading end of one submitted request."""

    def __init__(self, engine: Engine, request: _Request) -> None:
        self._engine, self._request = engine, request
        self.job = request.job

    @property
    def finished(self) -> bool:
        return self._request.finish is not None

    async def steps(self) -> AsyncGenerator[Step, None]:
        """Steps as they come (coalesced when the reader is slower), the last with the finish."""
        request = self._request
        while True:
            await request.changed.wait()
            request.changed.clear()
            if request.pending_ids or request.pending_text or request.finish:
                step = request.take()
                yield step
                if step.finish_reason is not None:
                    return

    async def result(self) -> Step:
        """The whole output, once finished."""
        await self._request.done.wait()
        return self._request.take()

    def abort(self, source: AbortSource = "disconnect") -> None:
        """Abort unless finished (by default: the client went away, as SGLang does then)."""
        if not self.finished:
            self._engine.abort(self.job.rid, source)


class Engine:
    """One simulated SGLang server's runtime."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.scheduler = Scheduler(
            config.max_running_requests, config.max_queued_requests, config.sim.latency
        )
        self.stats = SimStats()
        self.metrics = Metrics(config.served_model_name, self) if config.enable_metrics else None
        self.started_at = time.time()
        #: How the stream-end abort waits out its delay: a clock tests may replace.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        #: The aborts asked for, newest last (what tests and /sim/aborts look at).
        self.aborts: deque[AbortRecord] = deque(maxlen=_RECENT_ABORTS)
        #: SGLang's `rid_to_state`: every held rid, and whether an abort was sent for it.
        self._held: dict[str, bool] = {}
        self._requests: dict[str, _Request] = {}
        self.used_tokens = 0
        self.throughput = Throughput()
        # The radix cache: `--page-size` tokens per key, as many tokens as the KV pool.
        pages = config.max_total_tokens // config.page_size
        self.prefix_cache = PrefixCache(
            config.page_size, pages, enabled=not config.disable_radix_cache
        )
        #: `sglang:cache_hit_rate`: the share of cached tokens in the latest prefill.
        self.cache_hit_rate = 0.0

    # --- a request's checks: the tokenizer manager's (`_validate_one_request`) and the
    # scheduler's (`init_req_max_new_tokens`) context-length rules ---------------------------
    def _fit(self, prompt_tokens: int, max_new_tokens: int | None) -> tuple[int, int | None]:
        """(prompt tokens, max_new_tokens) that fit; ValueError unless auto-truncating."""
        context = self.config.context_length
        if prompt_tokens >= context:
            if not self.config.allow_auto_truncate:
                raise ValueError(
                    f"The input ({prompt_tokens} tokens) is longer than the "
                    f"model's context length ({context} tokens)."
                )
            prompt_tokens = context
        if max_new_tokens is not None and max_new_tokens + prompt_tokens > context:
            if not self.config.allow_auto_truncate:
                raise ValueError(
                    f"Requested token count exceeds the model's maximum context length "
                    f"of {context} tokens. You requested a total of "
                    f"{max_new_tokens + prompt_tokens} tokens: {prompt_tokens} tokens from the "
                    f"input messages and {max_new_tokens} tokens for the completion. Please "
                    "reduce the number of tokens in the input messages or the completion to "
                    "fit within the limit."
                )
            max_new_tokens = max(0, context - prompt_tokens)
        return prompt_tokens, max_new_tokens

    def budget(self, prompt_tokens: int, max_new_tokens: int | None) -> int:
        """What the scheduler lets a request generate: it keeps the context's last slot
        free (max_req_len = context - 1), and None means as much as fits."""
        room = max(0, self.config.context_length - 1 - prompt_tokens - 1)
        return room if max_new_tokens is None else min(max_new_tokens, room)

    async def job(
        self, prompt: Prompt, sampling_params: Mapping[str, Any], *, rid: str, stream: bool,
        traceparent: str | None, index: int = 0, turn: Turn = PLAIN,
        logprobs: LogprobRequest | None = None, prompt_ids: Sequence[int] | None = None,
        image_tokens: int = 0,
    ) -> Job:  # fmt: skip
        requested = sampling_params.get("max_new_tokens")
        kept, max_new_tokens = self._fit(prompt.tokens, requested)
        if max_new_tokens != requested:  # shortened by --allow-auto-truncate
            sampling_params = {**sampling_params, "max_new_tokens": max_new_tokens}
        sampling = parse_sampling(sampling_params)
        if kept < prompt.tokens:
            prompt = await off_loop(len(prompt.text) > LARGE_TEXT, _truncated, prompt.text, kept)
            prompt_ids = None
        budget = self.budget(prompt.tokens, sampling.max_new_tokens)
        inputs: tuple[tuple[LogprobEntry, list[LogprobEntry] | None], ...] = ()
        if logprobs is not None and logprobs.start >= 0:
            inputs = await _input_logprobs(prompt, prompt_ids, logprobs)
        return Job(
            rid, prompt, sampling, budget, stream, traceparent, index, turn, logprobs, inputs,
            image_tokens,
        )  # fmt: skip

    @property
    def up(self) -> bool:
        """SGLang's ServerStatus.Up: the model is loaded and warmed up (else Starting)."""
        return self.scheduler.is_loaded()

    @property
    def running(self) -> int:
        return self.scheduler.running

    @property
    def waiting(self) -> int:
        return self.scheduler.waiting

    @property
    def live_rids(self) -> tuple[str, ...]:
        """The rids of the requests submitted and not finished, oldest first."""
        return tuple(self._requests)

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
        self._dispatch(rid, source, lambda r: r.startswith(rid))
        return True

    def abort_all(self) -> None:
        """`abort_request(abort_all=True)`: one dispatch that ends every live request."""
        self._dispatch("", "abort_all", lambda r: True)

    def _dispatch(self, rid: str, source: AbortSource, matches: Callable[[str], bool]) -> None:
        if self.metrics is not None:
            self.metrics.aborted()
        ended = tuple(r for r in list(self._requests) if matches(r) and self._cancel(r))
        self.aborts.append(AbortRecord(rid, source, ended))

    async def abort_after_stream(self, rids: Sequence[str]) -> None:
        """`create_abort_task`: a streamed response has ended; after the delay, abort its
        rids in whatever request holds them by then."""
        await self.sleep(self.config.abort_delay_s)
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
                gen, ids = await self._decide(request)
                await self.scheduler.wait_loaded()
                async with self.scheduler.admit(job.prompt.tokens):
                    request.admitted = request.scheduled = True
                    lookup = await self.prefix_cache.lookup_text(job.prompt.text, job.prompt.tokens)
                    request.cached_tokens = lookup.hit
                    if self.prefix_cache.enabled and lookup.queried:
                        self.cache_hit_rate = lookup.hit / lookup.queried
                    await self._generate(request, gen, ids, lookup.uncached)
        except QueueFull as exc:
            self._finish(request, {"type": "abort", "status_code": 503, "message": str(exc)})
        except ConstraintError as exc:
            key = job.sampling.grammar.key if job.sampling.grammar else _call_grammar(job.turn)
            self._finish(
                request, _abort(f"Failed to compile {key} grammar: {exc}", 400, "BadRequestError")
            )
        except asyncio.CancelledError:
            # Aborted on purpose (engine.abort): end the output instead of propagating.
            self._finish(request, _abort("Aborted") if request.admitted else dict(_QUEUED_ABORT))
        finally:
            self._forget(request)  # after an unexpected error too: never leak a held rid
            if request.admitted and self.metrics is not None:
                self.metrics.finished(
                    job.stream, job.prompt.tokens, request.generated, request.e2e_latency,
                    request.cached_tokens,
                )  # fmt: skip

    async def _decide(self, request: _Request) -> tuple[Generation, list[int]]:
        """The whole completion and its output ids, decided up front (grammar errors
        surface here), with their logprobs when asked for."""
        job = request.job
        # SGLang's sampler reads `sampling_seed` only in deterministic mode (42 without one).
        seed = job.sampling.seed if self.config.enable_deterministic_inference else None
        if self.config.enable_deterministic_inference and seed is None:
            seed = DETERMINISTIC_DEFAULT_SEED
        default_seed = None if self.config.enable_deterministic_inference else self.config.sim.seed
        params = job.sampling.generation_params(job.max_new_tokens, seed)
        # Each of a prompt's n samples draws its own output (as if seeded with seed + index).
        params = generation.choice_params(params, job.index, default_seed)
        try:
            if job.sampling.grammar is not None:  # schemas meet their metaschema: off the loop
                constraint = await off_loop(True, job.sampling.grammar.build)
                params = replace(params, constraint=constraint)
            preamble, script = await off_loop(
                bool(job.turn.calls), _turn_text, job.prompt.text, params, default_seed, job.turn
            )
            gen = await decide(
                job.prompt.text, params, default_max_tokens=job.max_new_tokens,
                default_seed=default_seed, preamble=preamble, script=script,
            )  # fmt: skip
        except ConstraintError:
            request.scheduled = True  # SGLang compiles grammars in the scheduler
            raise
        ids = _output_ids(gen)
        request.thinking = gen.preamble_tokens
        if job.logprobs is not None:
            top, greedy = job.logprobs.top, params.temperature == 0
            heavy = len(ids) * max(top, 1) > _LARGE_LOGPROBS
            request.logprobs = await off_loop(heavy, partial(logprobs, greedy=greedy), ids, top)
        return gen, ids

    async def _generate(
        self, request: _Request, gen: Generation, ids: list[int], prefill_tokens: int
    ) -> None:
        """Pace the output; time to first token pays for the `prefill_tokens` not cached."""
        job, metrics = request.job, self.metrics
        entries = request.logprobs
        self.used_tokens += job.prompt.tokens
        last = request.arrived
        try:
            if not ids:  # nothing to generate: the prefill alone
                await self.scheduler.sleep_generation(0, prefill_tokens)
            async for i in self.scheduler.pace(range(len(ids)), prefill_tokens):
                now = time.perf_counter()
                if metrics is not None:
                    metrics.token(job.stream, now - (request.arrived if i == 0 else last), i == 0)
                last = now
                self.used_tokens += 1
                self.throughput.add()
                entry = entries[i] if entries else None
                request.push(gen.tokens[i] if i < len(gen.tokens) else "", ids[i], entry)
            self._finish(request, _finish_reason(gen, job.max_new_tokens))
        finally:
            self.used_tokens -= job.prompt.tokens + request.generated


def _call_grammar(turn: Turn) -> str:
    """The grammar SGLang would have compiled for a turn's tool calls (for its error)."""
    return "structural_tag" if turn.call_format == "hermes" else "json"


def _abort(
    message: str, status_code: int | None = None, err_type: str | None = None
) -> FinishReason:
    """SGLang's FINISH_ABORT.to_json()."""
    return {"type": "abort", "message": message, "status_code": status_code, "err_type": err_type}


def _finish_reason(gen: Generation, max_new_tokens: int) -> FinishReason:
    if gen.finish_reason == "length":
        return {"type": "length", "length": max_new_tokens}
    matched = tokenizer.EOS_TOKEN_ID if gen.matched_stop is None else gen.matched_stop
    return {"type": "stop", "matched": matched}


def _turn_text(
    prompt: str, params: generation.SamplingParams, default_seed: int | None, turn: Turn
) -> tuple[str, str | None]:
    """(preamble, script) of a chat turn: the reasoning segment, and the tool calls the
    model writes instead of an answer (None: it answers). Drawn like the text is, so a
    seeded or greedy request thinks and calls the same way every time."""
    preamble = ""
    if turn.think:
        preamble = reasoning.preamble(generation.rng(prompt, params, default_seed, salt="think"))
    if not turn.calls:
        return preamble, None
    rng = generation.rng(prompt, params, default_seed, salt="tools")
    # SGLang's parser re-serialises arguments with json.dumps: the model writes them so.
    calls = [
        tools.Call(c.name, json.dumps(json.loads(c.arguments), ensure_ascii=False))
        for c in tools.calls(turn.calls, rng)
    ]
    if turn.call_format == "hermes":
        return preamble, tools.hermes(calls)
    array = [{"name": c.name, "parameters": json.loads(c.arguments)} for c in calls]
    return preamble, json.dumps(array, ensure_ascii=False)


async def _input_logprobs(
    prompt: Prompt, ids: Sequence[int] | None, request: LogprobRequest
) -> tuple[tuple[LogprobEntry, list[LogprobEntry] | None], ...]:
    """The prompt's logprob entries from `start` on (`logprob_start_len`): the first token
    of a prompt has no logprob (None), nor alternatives; ValueError past the prompt's end."""
    if ids is None:
        ids = await off_loop(len(prompt.text) > LARGE_TEXT, tokenizer.encode, prompt.text)
    if request.start > len(ids):  # SGLang's scheduler words it with its own variable names
        raise ValueError(
            f"req.logprob_start_len={request.start} is higher than the number of input tokens "
            f"len(req.origin_input_ids)={len(ids)}. Please use a smaller logprob_start_len."
        )
    heavy = len(ids) * max(request.top, 1) > _LARGE_LOGPROBS
    values = await off_loop(heavy, partial(logprobs, greedy=False), list(ids), request.top)
    out: list[tuple[LogprobEntry, list[LogprobEntry] | None]] = []
    for position in range(request.start, len(ids)):
        value = values[position]
        if position == 0:
            out.append(((None, value.token_id, entry_text(value, request.text)), None))
        else:
            top: list[LogprobEntry] = [
                (a.logprob, a.token_id, entry_text(a, request.text)) for a in value.top
            ]
            out.append(((value.logprob, value.token_id, entry_text(value, request.text)), top))
    return tuple(out)


def entry_text(value: Alternative, text: bool) -> str | None:
    """A token's text in a logprob entry, when the request asked for texts."""
    return value.token if text else None


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
