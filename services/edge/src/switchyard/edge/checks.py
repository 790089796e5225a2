"""Expensive request checks (JSON schemas: response_format's and tools' parameters; the
base64 of images), run outside the event loop's process, in a bounded pool.

A check can take CPU-seconds. On the event loop it would stall every request, stream and
health probe of the process; in a thread it would still hold the GIL most of the time,
and every chunk relayed meanwhile would wait for it. So checks run in worker processes
(started on first use: an edge that never checks a schema never starts one). `workers`
checks run at once and at most `queue` more may wait; past that a request is refused at
once (`ChecksBusy`), never queued without bound. A slot stays taken until its check has
really finished, so requests that leave while their check runs cannot pile up work
behind the bound.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import multiprocessing
import re
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar

from switchyard.servicekit.json_schema import InvalidJsonSchema, check_json_schema

T = TypeVar("T")

#: The data URL head of the image types every engine decodes (workers import this module:
#: it imports nothing of the edge's web stack).
IMAGE_DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,", re.IGNORECASE)


class ChecksBusy(Exception):
    """Every worker is busy and the queue is full."""


class ChecksUnavailable(Exception):
    """A worker process died (and took the checks it was running with it)."""


def json_schema(schema: Any) -> None:
    """The metaschema check, in a worker (`InvalidJsonSchema` crosses back; the schema
    does not, it is the caller's already)."""
    check_json_schema(schema)


class InvalidPart(ValueError):
    """A part of the request failed its check: which (`param`), of what kind, and why."""

    def __init__(self, param: str, kind: Literal["json_schema", "image"], message: str) -> None:
        super().__init__(param, kind, message)  # the args rebuild it on this side of the pool
        self.param = param
        self.kind = kind
        self.message = message


def request_parts(schemas: list[tuple[str, Any]], images: list[tuple[str, str]]) -> None:
    """One request's expensive checks, in a worker: each `(param, schema)` against its
    metaschema, then each `(param, data URL)`'s base64; `InvalidPart` at the first failure."""
    for param, schema in schemas:
        try:
            check_json_schema(schema)
        except InvalidJsonSchema as exc:
            raise InvalidPart(param, "json_schema", f"{param}: {exc}") from None
    for param, url in images:
        head = IMAGE_DATA_URL.match(url)
        if head is None:
            continue  # an http(s) URL: nothing to decode
        try:
            binascii.a2b_base64(url[head.end() :], strict_mode=True)
        except binascii.Error:
            raise InvalidPart(
                param, "image", f"{param}: the image data URL is not valid base64"
            ) from None


def _worker_started() -> None:
    # The edge shuts its workers down itself; a Ctrl-C sent to the whole process group
    # must not print a traceback from each of them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _processes(workers: int) -> Executor:
    # "spawn": a fork would copy the edge's threads (gRPC's) in an unknown state.
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_started
    )


class Checks:
    def __init__(
        self,
        workers: int,
        queue: int,
        executor: Callable[[int], Executor] = _processes,
    ) -> None:
        self._workers = workers
        self._new_executor = executor
        self._executor: Executor | None = None
        self._capacity = workers + queue
        self._taken = 0

    @property
    def taken(self) -> int:
        """Checks running or waiting now."""
        return self._taken

    async def run(self, check: Callable[..., T], *args: object) -> T:
        """`check(*args)` in a worker: `ChecksBusy` when the pool is full,
        `ChecksUnavailable` when the worker died."""
        if self._taken >= self._capacity:
            raise ChecksBusy
        if self._executor is None:
            self._executor = self._new_executor(self._workers)
        executor = self._executor
        loop = asyncio.get_running_loop()
        self._taken += 1
        try:
            future = executor.submit(check, *args)
        except BaseException:
            self._taken -= 1
            raise

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to count
                loop.call_soon_threadsafe(self._release)

        future.add_done_callback(release)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._broken(executor)
            raise ChecksUnavailable from None

    def _release(self) -> None:
        self._taken -= 1

    def _broken(self, executor: Executor) -> None:
        # That pool is done for; the next check starts a new one.
        if self._executor is executor:
            self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Drop the waiting checks and let the workers go once the running ones end."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
