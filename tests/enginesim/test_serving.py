"""Disconnect handling, SSE framing, JSON responses and the uvicorn runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from switchyard.enginesim import serving
from switchyard.enginesim.serving import (
    ClientDisconnected,
    OrjsonResponse,
    sse_done,
    sse_event,
    until_disconnected,
)
from tests.support.polling import eventually_sync
from tests.support.processes import free_port


def test_sse_framing_per_engine() -> None:
    assert sse_event(b'{"a":1}') == b'data: {"a":1}\n\n'  # vLLM, SGLang
    assert sse_event(b'{"a":1}', space=False) == b'data:{"a":1}\n\n'  # TGI
    assert sse_done() == b"data: [DONE]\n\n"
    assert sse_done(space=False) == b"data:[DONE]\n\n"


def test_orjson_response() -> None:
    response = OrjsonResponse({"x": [1, "é"]}, status_code=503)
    assert response.body == '{"x":[1,"é"]}'.encode()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"


def _request(disconnect: asyncio.Event) -> Request:
    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


#: Code whose tasks these tests watch (the loop may also run other modules' servers).
_WATCHED = {__file__, serving.__file__}


def _others() -> set[asyncio.Task[object]]:
    """The tasks besides this one running this module's or `serving`'s code."""
    return {
        task
        for task in asyncio.all_tasks() - {asyncio.current_task()}
        if getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", None) in _WATCHED
    }


async def test_the_result_comes_back_and_no_task_is_left() -> None:
    before = _others()

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await until_disconnected(_request(asyncio.Event()), work()) == "done"
    assert _others() == before


async def test_a_disconnect_cancels_the_work() -> None:
    before = _others()
    gone = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    asyncio.get_running_loop().call_later(0.01, gone.set)
    with pytest.raises(ClientDisconnected):
        await until_disconnected(_request(gone), work())
    assert cancelled.is_set()
    assert _others() == before


async def test_errors_of_the_work_propagate() -> None:
    async def work() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        await until_disconnected(_request(asyncio.Event()), work())


async def test_cancelling_the_caller_cancels_the_work() -> None:
    before = _others()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    caller = asyncio.get_running_loop().create_task(
        until_disconnected(_request(asyncio.Event()), work())
    )
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()
    assert _others() == before


_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from switchyard.enginesim.serving import serve

async def hello(request):
    return PlainTextResponse("hello")

serve(Starlette(routes=[Route("/", hello)]), "127.0.0.1", int(sys.argv[1]),
      delay_listen_s=float(sys.argv[2]), name="test-sim")
"""


@contextlib.contextmanager
def _server(log: Path, port: int, delay: float) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _APP, str(port), str(delay)],
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str) -> str:
    def line() -> str | None:
        found = [x for x in log.read_text(errors="replace").splitlines() if text in x]
        if not found and proc.poll() is not None:
            raise AssertionError(f"exited without a line with {text!r}: {log.read_text()}")
        return found[0] if found else None

    return eventually_sync(line, what=f"a log line with {text!r}")


def test_serve_listens_after_the_delay_and_stops_on_sigterm(tmp_path: Path) -> None:
    log, port = tmp_path / "sim.log", free_port()
    with _server(log, port, 0.5) as proc:
        _wait_for_line(proc, log, "loading: not listening")
        line = _wait_for_line(proc, log, "listening on")
        assert f"test-sim listening on http://127.0.0.1:{port}" in line
        text = log.read_text()
        assert text.index("loading: not listening") < text.index(line)
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "hello"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal


def test_the_port_stays_closed_while_loading_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    log, port = tmp_path / "sim.log", free_port()
    # An hour's load: the port stays closed for the whole test, however slow the machine.
    with _server(log, port, 3600.0) as proc:
        _wait_for_line(proc, log, "loading: not listening")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=10.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
