"""SGLang's request ids (`rid`): unique while in flight, aborted again after a stream ends,
aborted by prefix (`managers/tokenizer_manager.py`, `managers/scheduler.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from switchyard.enginesim.sglang.engine import Engine
from tests.enginesim.sglang.conftest import MODEL, asgi, engine_of, events, live, make_app
from tests.support.polling import eventually

LONG_PROMPT = " ".join(["word"] * 1100)  # over the 1024-token context
#: Long enough to be stalled after its first token by the simulator's fault.
HELD = {"text": "hold", "sampling_params": {"max_new_tokens": 50, "ignore_eos": True}}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def _stall_next(client: httpx.AsyncClient, count: int = 1) -> None:
    """The next `count` requests stop after one token, until `_release`."""
    response = await client.post("/sim/faults", json={"stall_after": 1, "count": count})
    assert response.status_code == 200


async def _release(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/sim/faults")).status_code == 200


async def _holding(
    client: httpx.AsyncClient, app: Starlette, rid: str
) -> asyncio.Task[httpx.Response]:
    """A non-streamed request with `rid`, stalled in the engine (so its rid is held)."""
    engine = engine_of(app)
    await _stall_next(client)
    task = asyncio.create_task(client.post("/generate", json={**HELD, "rid": rid}))
    await eventually(
        lambda: rid in engine.live_rids and engine_of(app).scheduler.faults.stalled == 1
    )
    return task


@pytest.fixture
async def app_client() -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = make_app("--enable-metrics")
    async with asgi(app) as client:
        yield app, client


async def test_a_rid_in_flight_is_refused_by_each_route_in_its_own_way(
    app_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = app_client
    holder = await _holding(client, app, "dup")
    duplicate = "Duplicate request ID detected: dup"

    response = await client.post("/generate", json={"text": "x", "rid": "dup"})
    assert (response.status_code, response.json()) == (400, {"error": {"message": duplicate}})
    for stream in (False, True):  # the chat route refuses before it streams: always a 400
        response = await client.post(
            "/v1/chat/completions", json={**CHAT, "rid": "dup", "stream": stream}
        )
        assert response.status_code == 400
        assert response.json() == {
            "object": "error",
            "message": duplicate,
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    response = await client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "x", "rid": "dup", "stream": True}
    )
    assert (response.status_code, response.json()["message"]) == (400, duplicate)
    assert engine_of(app).live_rids == ("dup",), "a refused duplicate changes nothing"

    # /generate streams: the refusal is an error event in a 200 stream, and the stream's
    # end-of-stream abort (here without delay) then aborts the request that holds the rid.
    response = await client.post("/generate", json={"text": "x", "rid": "dup", "stream": True})
    assert response.status_code == 200
    assert events(response.text) == [
        {
            "error": {
                "message": duplicate,
                "type": "invalid_request_error",
                "code": 400,
                "retryable": False,
            }
        }
    ]
    await _release(client)
    held = (await holder).json()
    assert held["meta_info"]["finish_reason"]["type"] == "abort"
    assert [(a.rid, a.source) for a in engine_of(app).aborts] == [("dup", "stream_end")]


async def test_the_duplicate_check_comes_before_validation(
    app_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = app_client
    holder = await _holding(client, app, "dup")
    response = await client.post("/generate", json={"text": LONG_PROMPT, "rid": "dup"})
    assert response.json() == {"error": {"message": "Duplicate request ID detected: dup"}}
    await _release(client)
    await holder
    # A refused request gives its rid back: the same rid works at once.
    response = await client.post("/generate", json={"text": LONG_PROMPT, "rid": "fresh"})
    assert "longer than the model's context length" in response.json()["error"]["message"]
    response = await client.post(
        "/v1/chat/completions", json={**CHAT, "rid": "fresh", "max_tokens": 5000}
    )
    assert response.status_code == 400
    response = await client.post("/generate", json={"text": "ok", "rid": "fresh"})
    assert response.status_code == 200


class Gate:
    """The engine's clock for the stream-end abort: it waits until the test opens it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0

    async def sleep(self, seconds: float) -> None:
        assert seconds == 2.0, "SGLang's delay, unless told otherwise"
        self.waiting += 1
        await self.opened.wait()


def _gated(engine: Engine) -> Gate:
    gate = Gate()
    engine.sleep = gate.sleep
    return gate


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 3}}),
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 3}),
    ],
    ids=["generate", "chat", "completions"],
)
async def test_a_rid_reused_soon_after_a_stream_is_aborted(path: str, body: dict[str, Any]) -> None:
    """SGLang's `create_abort_task`: 2 s after a stream ends, its rid is aborted in whatever
    request holds it then."""
    app = make_app("--sim-abort-delay", "2")
    engine = engine_of(app)
    gate = _gated(engine)
    async with live(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(path, json={**body, "rid": "again", "stream": True})
        assert events(response.text)  # the whole stream, ended
        await eventually(lambda: gate.waiting == 1)
        holder = await _holding(client, app, "again")
        gate.opened.set()
        await eventually(lambda: len(engine.aborts) == 1)
        await _release(client)
        held = (await holder).json()
    assert held["meta_info"]["finish_reason"]["type"] == "abort"
    (abort,) = engine.aborts
    assert (abort.rid, abort.source, abort.ended) == ("again", "stream_end", ("again",))


async def test_a_rid_reused_after_the_delay_is_left_alone() -> None:
    app = make_app("--sim-abort-delay", "2")
    engine = engine_of(app)
    gate = _gated(engine)
    gate.opened.set()
    async with live(app) as url, httpx.AsyncClient(base_url=url) as client:
        body = {
            "text": "hi",
            "rid": "later",
            "stream": True,
            "sampling_params": {"max_new_tokens": 3},
        }
        await client.post("/generate", json=body)
        await eventually(lambda: len(engine.aborts) == 1)  # it ran, and found nothing
        response = await client.post("/generate", json={**HELD, "rid": "later"})
    assert response.json()["meta_info"]["finish_reason"] == {"type": "length", "length": 50}
    assert [(a.rid, a.ended) for a in engine.aborts] == [("later", ())]


async def test_abort_request_ends_every_rid_it_prefixes(
    app_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = app_client
    engine = engine_of(app)
    await _stall_next(client, count=3)
    tasks = {
        rid: asyncio.create_task(client.post("/generate", json={**HELD, "rid": rid}))
        for rid in ("job-1", "job-10", "other")
    }
    await eventually(lambda: engine_of(app).scheduler.faults.stalled == 3)

    for body in ({"rid": "nobody"}, {"rid": ""}, {"rid": None}, {}):  # nothing held: ignored
        assert (await client.post("/abort_request", json=body)).status_code == 200
    assert len(engine.live_rids) == 3
    assert (await client.post("/abort_request", json={"rid": "job-1"})).status_code == 200
    await eventually(lambda: list(engine.live_rids) == ["other"])
    assert (await client.post("/abort_request", json={"rid": "job-1"})).status_code == 200
    assert (await client.post("/abort_request", json={"abort_all": True})).status_code == 200
    await eventually(lambda: not engine.live_rids)
    await _release(client)

    finishes = {rid: (await t).json()["meta_info"]["finish_reason"] for rid, t in tasks.items()}
    assert all(f["type"] == "abort" for f in finishes.values())
    records = [(a.rid, a.source, a.ended) for a in engine.aborts]
    assert ("job-1", "abort_request", ("job-1", "job-10")) in records
    assert ("", "abort_all", ("other",)) in records
    metrics = (await client.get("/metrics")).text
    # One dispatch each: job-1 (both requests) and abort_all.
    assert (
        'sglang:num_aborted_requests_total{engine_type="unified",model_name="demo"} 2.0' in metrics
    )


async def test_an_abort_request_with_a_bad_body_is_a_flat_400(
    app_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = app_client
    response = await client.post("/abort_request", json={"rid": 3})
    assert response.status_code == 400
    assert response.json()["type"] == "Bad Request"


async def test_the_aborts_are_listed_for_tests(
    app_client: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = app_client
    holder = await _holding(client, app, "seen")
    await client.post("/abort_request", json={"rid": "seen"})
    await client.post("/abort_request", json={"rid": "seen"})  # sent already: a no-op
    await _release(client)
    await holder
    assert (await client.get("/sim/aborts")).json() == [
        {"rid": "seen", "source": "abort_request", "ended": ["seen"]},
        {"rid": "seen", "source": "abort_request", "ended": []},
    ]
