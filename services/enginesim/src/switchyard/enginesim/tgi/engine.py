"""One simulated TGI: admission, validation, queueing, generation and its metrics.

A request goes through the router's steps in its order (`infer/mod.rs`): take a
concurrency permit or fail at once with `Overloaded` (429), validate, queue for the
batch, generate. Front-ends (native, chat, completions) drive these steps and only
differ in how they write the tokens out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final

from switchyard.enginesim import tokenizer
from switchyard.enginesim.cli import SimOptions
from switchyard.enginesim.generation import SamplingParams, generate
from switchyard.enginesim.scheduler import Overloaded, Scheduler
from switchyard.enginesim.serving import ClientDisconnected
from switchyard.enginesim.stats import SimStats
from switchyard.enginesim.structured import ConstraintError
from switchyard.enginesim.tgi.config import TgiConfig
from switchyard.enginesim.tgi.errors import FAILURE_LABEL, InferError
from switchyard.enginesim.tgi.metrics import TgiMetrics
from switchyard.enginesim.tgi.params import Parameters
from switchyard.enginesim.tgi.stopping import Decoded, OutToken, apply_stopping, logprob
from switchyard.enginesim.tgi.validation import Validator, ValidRequest, check_grammar_error

log = logging.getLogger("switchyard.enginesim.tgi")

_THREAD_INPUT_CHARS: Final = 32_768  # tokenize larger inputs off the event loop


@dataclass(frozen=True, slots=True)
class Outcome:
    """A generation decided for an admitted request (then paced out)."""

    valid: ValidRequest
    decoded: Decoded
    top_tokens: tuple[tuple[OutToken, ...], ...]
    queued_s: float
    validated_s: float
    started_at: float  # perf_counter() when the batch took it

    @property
    def seed(self) -> int | None:
        """The seed TGI reports: only sampled generations have one."""
        return self.valid.seed if self.valid.do_sample else None

    def prefill(self) -> list[dict[str, Any]]:
        """`details.prefill`: the input tokens (the first one has no logprob)."""
        ids = self.valid.input_ids
        return [
            {
                "id": tid,
                "text": tokenizer.token_text(tid),
                "logprob": None if i == 0 else logprob(tid, -i, 0),
            }
            for i, tid in enumerate(ids)
        ]


class TgiEngine:
    def __init__(self, config: TgiConfig, sim: SimOptions, stats: SimStats) -> None:
        self.config = config
        self.stats = stats
        self.validator = Validator(config, sim.seed)
        # Not listening while "loading" stands in for the load delay (see `serve`).
        self.scheduler = Scheduler(config.max_running, None, replace(sim.latency, load_delay_s=0))
        self.metrics = TgiMetrics(config, self._gauges)
        self._batch_tokens = 0

    def _gauges(self) -> tuple[int, int, int]:
        return self.scheduler.waiting, self.scheduler.running, self._batch_tokens

    def fail(self, error: InferError) -> InferError:
        self.metrics.failure(FAILURE_LABEL[error.error_type])
        return error

    def _check_permit(self) -> None:
        limit = self.config.max_concurrent_requests
        if self.scheduler.running + self.scheduler.waiting >= limit:
            self.metrics.failure("overloaded")
            raise Overloaded("Model is overloaded")

    @contextmanager
    def counting_drops(self) -> Iterator[None]:
        """Count a request the client abandoned as `tgi_request_failure{err="dropped"}`."""
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit, ClientDisconnected):
            self.metrics.failure("dropped")
            raise

    async def validate(
        self, inputs: str, parameters: Parameters, *, add_special_tokens: bool = True
    ) -> ValidRequest:
        """Take a permit, then validate (TGI's order: an overloaded server answers 429 first)."""
        self._check_permit()
        try:
            if len(inputs) > _THREAD_INPUT_CHARS:
                valid = await asyncio.to_thread(
                    self.validator.validate,
                    inputs,
                    parameters,
                    add_special_tokens=add_special_tokens,
                )
            else:
                valid = self.validator.validate(
                    inputs, parameters, add_special_tokens=add_special_tokens
                )
        except InferError as error:
            raise self.fail(error) from None
        self.metrics.observe("tgi_request_input_length", valid.input_length)
        self.metrics.observe("tgi_request_max_new_tokens", valid.max_new_tokens)
        return valid

    @asynccontextmanager
    async def admitted(self, valid: ValidRequest, received_at: float) -> AsyncIterator[Outcome]:
        """Queue for the batch, then hold a batch slot for the block with the generation decided."""
        limit = self.config.max_concurrent_requests
        validated_s = time.perf_counter() - received_at
        budget = valid.input_length + valid.max_new_tokens  # the batch's reservation
        try:
            async with self.scheduler.try_admit(limit, valid.input_length) as granted:
                self._batch_tokens += budget
                try:
                    try:
                        check_grammar_error(valid)
                        decoded, top = await self._decide(valid)
                    except InferError as error:
                        raise self.fail(error) from None
                    started = time.perf_counter()
                    yield Outcome(valid, decoded, top, granted.queued_s, validated_s, started)
                finally:
                    self._batch_tokens -= budget
        except Overloaded:  # a permit taken by another request since `validate`
            self.metrics.failure("overloaded")
            raise

    async def _decide(
        self, valid: ValidRequest
    ) -> tuple[Decoded, tuple[tuple[OutToken, ...], ...]]:
        params = SamplingParams(
            max_tokens=valid.max_total_new_tokens,
            temperature=valid.temperature if valid.do_sample else 0.0,
            top_p=valid.top_p,
            top_k=valid.top_k,
            seed=valid.seed,
            constraint=valid.constraint,
        )
        try:
            if valid.constraint is None:
                generation = generate(
                    valid.inputs, params, default_max_tokens=valid.max_total_new_tokens
                )
            else:  # schema-constrained writing may take a while: keep the loop free
                generation = await asyncio.to_thread(
                    generate, valid.inputs, params, default_max_tokens=valid.max_total_new_tokens
                )
        except ConstraintError as exc:
            raise InferError("generation", str(exc)) from None
        except Exception as exc:  # a shard that fails answers 424; so does a simulator bug
            log.exception("generation failed")
            raise InferError("generation", f"{type(exc).__name__}: {exc}") from None
        decoded = apply_stopping(generation, valid.max_total_new_tokens, valid.stop, valid.seed)
        top = (
            tuple(_top_tokens(t, valid.top_n_tokens) for t in decoded.tokens)
            if valid.top_n_tokens
            else ()
        )
        return decoded, top

    def pace(self, outcome: Outcome) -> AsyncIterator[OutToken]:
        """The tokens at the model's pace (streams)."""
        return self.scheduler.pace(outcome.decoded.tokens, outcome.valid.input_length)

    async def sleep(self, outcome: Outcome) -> None:
        """As long as the whole generation takes (non-streaming)."""
        await self.scheduler.sleep_generation(
            outcome.decoded.generated_tokens, outcome.valid.input_length
        )

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


def _top_tokens(chosen: OutToken, n: int) -> tuple[OutToken, ...]:
    """`n` plausible alternatives, most likely first, the chosen token among them."""
    out = [chosen]
    for k in range(1, n):
        tid = (chosen.id + 7919 * k) % tokenizer.CHAR_BASE
        out.append(
            OutToken(
                tid,
                tokenizer.token_text(tid),
                round(chosen.logprob - 0.75 * k, 4),
                tokenizer.is_special(tid),
            )
        )
    return tuple(out)
