"""Everything one request holds at the edge, owned by one object and given back in one place.

As the pipeline goes, a request takes: a rate-limit reservation (`reserve`), the watch on
its client, which also enters it in the shutdown's drain (`watch_client`), an admission
slot with the queued and in-flight gauges (`admit`), and an endpoint for each attempt
(`next_endpoint`). `Claim` is the async context manager around the whole request; its exit
runs once, whatever ended the request — the response sent, an error before or after the
first byte, the client gone, the shutdown's grace over, a bug — and, in this order:

1. ends the watch (a disconnect or a shutdown from then on changes nothing);
2. answers what is left to answer: an `OpenAIError` as a JSON error, or as the last SSE
   event of a stream already begun; the end of the shutdown's grace as a 503 the same way;
3. gives back the endpoint, the slot and the gauges, and settles the reservation with the
   tokens really used (partial usage for a request cut short, none for one never run);
4. writes the request's one record (`Exchange.record`), and counts its usage from it.

What differs between APIs (their bodies, their canonical request, their encoding) is not
here: a new API takes a `Claim` as it is and writes no resource code of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Send

from switchyard.edge import metrics
from switchyard.edge.disconnect import ClientWatch
from switchyard.edge.errors import OPENAI_ERRORS, ErrorDialect, OpenAIError
from switchyard.inference.errors import InferenceError, from_rpc_error

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from switchyard.edge.budget import Reservation as BudgetReservation
    from switchyard.edge.exchange import Exchange
    from switchyard.edge.ratelimit import Decision, Limits
    from switchyard.edge.routing.endpoints import Endpoint
    from switchyard.edge.routing.table import Route
    from switchyard.edge.state import EdgeState

#: The status recorded (and sent, for the trace: the server drops it) for a client that left.
CLIENT_GONE = 499


def body_message(chunk: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits that apply."""
    headers: dict[str, str] = {}
    for kind, limit, remaining, reset in (
        (
            "requests",
            decision.limit_requests,
            decision.remaining_requests,
            decision.reset_requests_s,
        ),
        ("tokens", decision.limit_tokens, decision.remaining_tokens, decision.reset_tokens_s),
    ):
        if limit is None:
            continue
        headers[f"x-ratelimit-limit-{kind}"] = str(limit)
        if remaining is not None:
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(remaining, 0))
        if reset is not None:
            headers[f"x-ratelimit-reset-{kind}"] = f"{reset:.3f}s"
    return headers


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens charged to a key before the request ran: the most it can use."""

    subject: str
    limits: Limits
    tokens: int
    #: Our estimate of the prompt, charged when a request is cut short before its usage.
    prompt_estimate: int


class Claim:
    """`async with Claim(edge, exchange, receive, send) as claim:` around one request;
    `errors` is the API's way of answering an error (OpenAI's unless said); `priority`, a
    class that overrides the key's (background jobs run in the lowest)."""

    __slots__ = (
        "_endpoint",
        "_in_flight",
        "_reservation",
        "_route",
        "_started",
        "_streaming",
        "_tried",
        "_watch",
        "affinity",
        "budget",
        "edge",
        "errors",
        "exchange",
        "headers",
        "priority",
        "receive",
        "send",
        "session",
    )

    def __init__(
        self,
        edge: EdgeState,
        exchange: Exchange,
        receive: Receive,
        send: Send,
        errors: ErrorDialect = OPENAI_ERRORS,
        priority: str | None = None,
    ) -> None:
        self.edge = edge
        self.errors = errors
        #: The admission class of this request whatever its key's (background work's).
        self.priority = priority
        self.exchange = exchange
        self.receive = receive
        self.send = send
        #: Headers of every answer, success or error: the request id, then the rate limits.
        self.headers = {"x-request-id": exchange.request_id}
        self._reservation: Reservation | None = None
        #: Tokens charged to the key's and tenant's budgets (`budget.charge`), settled
        #: with the real usage at the end as the rate-limit reservation is.
        self.budget: BudgetReservation | None = None
        self._watch: ClientWatch | None = None
        self._route: Route | None = None  # admitted: its slot is held
        self._in_flight: Gauge | None = None
        self._endpoint: Endpoint | None = None  # the current attempt's
        self._tried: set[str] = set()
        #: The client's session id (a header or the body's `user`), and the request's
        #: affinity key (`routing.affinity`; None: the endpoint is picked by load alone).
        self.session: str | None = None
        self.affinity: int | None = None
        self._started = False  # the response's status went out
        self._streaming = False  # ... as an SSE stream, whose last message is still to send

    async def __aenter__(self) -> Claim:
        return self

    # -- what a request takes, in the order it takes it -------------------------------------

    async def reserve(
        self, subject: str, limits: Limits, tokens: int, prompt_estimate: int
    ) -> Decision:
        """Charge `tokens` to the key's limits; when allowed, held until the end, when the
        real usage settles it. `LimiterUnavailable` propagates; a refusal holds nothing."""
        decision = await self.edge.limiter.acquire(subject, limits, tokens)
        self.headers.update(rate_limit_headers(decision))
        if decision.allowed:
            self._reservation = Reservation(subject, limits, tokens, prompt_estimate)
        return decision

    async def watch_client(self) -> None:
        """From now on (the body is read), a client that leaves, or the end of a shutdown's
        grace, ends the request at once."""
        watch = ClientWatch(self.receive, drain=self.edge.drain)
        await watch.__aenter__()
        self._watch = watch

    @property
    def watch(self) -> ClientWatch:
        assert self._watch is not None, "watch_client() first"
        return self._watch

    async def admit(self, route: Route, priority: str | None = None) -> None:
        """Wait for an admission slot for `route` (`admission.Refused` propagates), in the
        Claim's own class if it has one, else `priority`'s (the key's; None: the default
        class); weighed against other tenants by the tokens reserved (the most it may use)."""
        reservation = self._reservation
        queued = metrics.QUEUED.labels(route.name)
        queued.inc()
        try:
            waited = await self.edge.admission.acquire(
                route.name,
                tenant=self.exchange.tenant or "",
                cost=reservation.tokens if reservation is not None else 1,
                priority=self.priority or priority or self.edge.settings.default_priority,
            )
        finally:
            queued.dec()
        self._route = route
        self._in_flight = metrics.IN_FLIGHT.labels(route.name)
        self._in_flight.inc()
        if waited:
            self.exchange.queue_wait_s = waited
            metrics.QUEUE_WAIT.labels(route.name).observe(waited)

    def next_endpoint(self) -> Endpoint | None:
        """The endpoint for the next attempt (the previous one is given back), or None when
        the attempts are spent or no untried endpoint is serving."""
        self._put_back_endpoint()
        route = self._route
        assert route is not None, "admit() first"
        if len(self._tried) >= self.edge.settings.max_attempts:
            return None
        endpoint = self.edge.pool.pick(route, self._tried, self.affinity)
        if endpoint is None:
            return None
        if self._tried:
            metrics.RETRIES.labels(route.name).inc()
        self._tried.add(endpoint.address)
        self.exchange.attempts += 1
        self.exchange.endpoint = endpoint.address
        endpoint.in_flight += 1
        self._endpoint = endpoint
        return endpoint

    def endpoint_answered(self) -> None:
        """The attempt got its answer (a stream: its first message): the endpoint works."""
        if self._endpoint is not None:
            self._endpoint.call_succeeded()

    def endpoint_failed(self, exc: grpc.aio.AioRpcError) -> InferenceError:
        """The attempt failed: UNAVAILABLE counts against the endpoint (see `Ejection`)."""
        error = from_rpc_error(exc)
        if error.code == grpc.StatusCode.UNAVAILABLE and self._endpoint is not None:
            self._endpoint.call_failed()
        return error

    # -- the response's own start and end (errors are answered by the exit) -----------------

    async def respond(self, content_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole response: its status (200), headers and body."""
        self.watch.stop()  # its last message follows: the client may leave after it
        self._started = True
        await self.send(self._start(200, content_headers))
        await self.send(body_message(body, more=False))

    async def start_stream(self, content_headers: list[tuple[bytes, bytes]]) -> None:
        """Commit to 200 and a stream; from now on silences get keep-alive comments. Again
        once begun (a stream held for a waking model begins early): nothing more."""
        if self._streaming:
            return
        self._started = self._streaming = True
        await self.send(self._start(200, content_headers))
        self.watch.keep_alive(self.send, self.edge.settings.stream_keepalive_s)

    async def end_stream(self, last: bytes) -> None:
        """The stream's last message."""
        self.watch.stop()
        self._streaming = False
        await self.send(body_message(last, more=False))

    def _start(
        self,
        status: int,
        content_headers: list[tuple[bytes, bytes]],
        extra: Mapping[str, str] | None = None,
    ) -> Message:
        fields = {**self.headers, **extra} if extra else self.headers
        headers = content_headers + [(k.encode(), v.encode()) for k, v in fields.items()]
        return {"type": "http.response.start", "status": status, "headers": headers}

    # -- the end, once ------------------------------------------------------------------------

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return await self._conclude(exc_type, exc, tb)
        finally:
            try:
                await self._give_back()
            finally:
                self.exchange.record()
                await self._record_usage()

    async def _record_usage(self) -> None:
        """The request's usage, from its log line's values (`switchyard.edge.usage`): after
        the answer ended; a store's write awaited here, bounded by the requests in flight."""
        write = self.edge.usage.record(self.exchange)
        if write is not None:
            # Shielded as the settle is: a shutdown cancelling this task must not lose it.
            await asyncio.shield(write)

    async def _conclude(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Ends the watch and answers what is left; whether `exc` was handled here."""
        handled = shut_down = gone = False
        if self._watch is not None:
            try:
                handled = await self._watch.__aexit__(exc_type, exc, tb)
            finally:
                gone, shut_down = self._watch.disconnected, self._watch.shut_down
                self.exchange.client_disconnected = gone
        if gone or isinstance(exc, ClientDisconnect):
            self.exchange.client_disconnected = True
            await self._answer_gone()
            return handled or isinstance(exc, ClientDisconnect)
        error = exc if isinstance(exc, OpenAIError) else None
        if shut_down:
            error = OpenAIError.shutting_down(self.edge.settings.retry_after_s)
        if error is not None:
            self.exchange.fail(error.status, error.kind)
            await self._answer(error)
            return handled or isinstance(exc, OpenAIError)
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            # A bug: the framework logs it and answers 500 if it still can.
            self.exchange.fail(500, "internal")
        return handled

    async def _answer(self, error: OpenAIError) -> None:
        if self._streaming:  # a stream is open: its last event says what went wrong
            self._streaming = False
            await self.send(body_message(self.errors.stream_event(error), more=False))
            return
        if self._started:
            return  # the answer went out whole: nothing more to say
        self._started = True
        status, body, headers = self.errors.answer(error)
        content = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await self.send(self._start(status, content, headers))
        await self.send(body_message(body, more=False))

    async def _answer_gone(self) -> None:
        if not self._started:  # for the trace's status only: the client is not there to read it
            self._started = True
            await self.send(self._start(CLIENT_GONE, []))
            await self.send(body_message(b"", more=False))

    def _put_back_endpoint(self) -> None:
        if self._endpoint is not None:
            self._endpoint.in_flight -= 1
            self._endpoint = None

    async def _give_back(self) -> None:
        self._put_back_endpoint()
        if self._route is not None:
            self.edge.admission.release(self._route.name)
            self._route = None
        if self._in_flight is not None:
            self._in_flight.dec()
            self._in_flight = None
        reservation, self._reservation = self._reservation, None
        try:
            if reservation is not None:
                used = self._used(reservation)
                # Shielded: a shutdown cancelling this task must not lose the usage correction.
                await asyncio.shield(
                    self.edge.limiter.settle(
                        reservation.subject, reservation.limits, reservation.tokens, used
                    )
                )
        finally:  # a cancellation during the limiter's settle must not skip the budgets'
            await self._settle_budget()

    async def _settle_budget(self) -> None:
        """The budgets' charge corrected with the real usage (what `_used` counts: none for
        a cache hit or a request that never ran, the prompt's estimate when cut short)."""
        budget, self.budget = self.budget, None
        if budget is not None:
            ex = self.exchange
            used = (0, 0) if ex.cache == "hit" else (ex.prompt_tokens, ex.completion_tokens)
            await asyncio.shield(self.edge.budgets.settle(budget, *used))

    def _used(self, reservation: Reservation) -> int:
        ex = self.exchange
        if ex.cache == "hit":
            return 0  # answered from the cache: no engine ran, so no tokens are charged
        if not ex.usage_reported and ex.completion_tokens:
            # Cut short (client gone, backend lost): charge what was generated, and our
            # estimate of the prompt, which the engine did process.
            ex.prompt_tokens = reservation.prompt_estimate
        return ex.prompt_tokens + ex.completion_tokens
