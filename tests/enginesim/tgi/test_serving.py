"""The simulator as a server: loading, overload, cancellation, keep-alives, metrics, launcher flags."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from switchyard.enginesim.serving import SSE_KEEPALIVE
from switchyard.enginesim.tgi.flags import parse
from switchyard.enginesim.tgi.routes import merged, with_keep_alive
from tests.enginesim.tgi.conftest import asgi_client, make_app, sse_json
from tests.support.polling import eventually, eventually_sync
from tests.support.processes import Service, free_port
from tests.support.stacks import stalled

Start = Callable[..., Service]
SLOW = ("--sim-ttft", "0.05", "--sim-itl", "0.05")
BODY = {"inputs": "The token at night", "parameters": {"max_new_tokens": 100, "do_sample": True}}


def _url(service: Service) -> str:
    return f"http://127.0.0.1:{service.port}"


async def _stats(client: httpx.AsyncClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await client.get("/sim/stats")).json()
    return stats


async def _until(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def met() -> dict[str, Any] | None:
        stats = await _stats(client)
        return stats if check(stats) else None

    stats: dict[str, Any] = await eventually(met, what="the simulator's stats to match")
    return stats


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")


def test_not_listening_while_loading(start_sim: Start) -> None:
    # An hour's load: the port stays closed for the whole test, however slow the machine.
    service = start_sim("--sim-load-delay", "3600", wait=False)
    eventually_sync(lambda: "loading: not listening" in service.log_tail(), what="loading")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{_url(service)}/health", timeout=10.0)
    assert service.alive()
    assert "listening on" not in service.log_tail()
    assert service.stop(timeout=30) == 0  # SIGTERM ends the load: a clean exit


def test_listens_once_loaded(start_sim: Start) -> None:
    service = start_sim("--sim-load-delay", "0.5")  # waits for /health
    log = service.log_tail()
    assert log.index("loading: not listening") < log.index("listening on"), log


async def test_a_disconnected_stream_is_aborted_and_counted(start_sim: Start) -> None:
    service = start_sim(*SLOW)
    # Held after its first token: the stream cannot end before the client leaves.
    async with stalled(_url(service), count=1), httpx.AsyncClient(base_url=_url(service)) as client:
        async with client.stream("POST", "/generate_stream", json=BODY) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break  # one token, then hang up
        stats = await _until(client, lambda s: s["aborted"] == 1)
        assert (stats["open_streams"], stats["in_flight"]) == (0, 0)
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, 'tgi_request_failure{err="dropped"}') == 1
        assert _metric(metrics, "tgi_batch_current_size") == 0


async def test_a_disconnected_unary_request_is_aborted(start_sim: Start) -> None:
    service = start_sim(*SLOW)
    async with stalled(_url(service), count=1), httpx.AsyncClient(base_url=_url(service)) as client:
        call = asyncio.create_task(client.post("/generate", json=BODY))
        await _until(client, lambda s: s["in_flight"] == 1)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        stats = await _until(client, lambda s: s["aborted"] == 1)
        assert stats["in_flight"] == 0


async def test_overload_is_429_or_an_event_and_gauges_are_live(start_sim: Start) -> None:
    service = start_sim(*SLOW, "--max-concurrent-requests", "3", "--max-batch-size", "2")
    # Every request held after its first token: the three stay in flight until cancelled.
    async with (
        stalled(_url(service)),
        httpx.AsyncClient(base_url=_url(service), timeout=30) as client,
    ):
        calls = [asyncio.create_task(client.post("/generate", json=BODY)) for _ in range(3)]
        await _until(client, lambda s: s["in_flight"] == 3)
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "tgi_batch_current_size") == 2
        assert _metric(metrics, "tgi_queue_size") == 1
        refused = await client.post("/generate", json=BODY)
        assert refused.status_code == 429
        assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        streamed = await client.post("/generate_stream", json=BODY)
        assert streamed.status_code == 200
        assert sse_json(streamed.text) == [
            {"error": "Model is overloaded", "error_type": "overloaded"}
        ]
        # Overload is checked before validation, as the router takes its permit first.
        invalid = await client.post("/generate", json={"inputs": ""})
        assert invalid.status_code == 429
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        stats = await _until(client, lambda s: s["in_flight"] == 0)
        assert stats["rejected"] == 3
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, 'tgi_request_failure{err="overloaded"}') == 3


async def test_keep_alive_comments_while_silent(start_sim: Start) -> None:
    service = start_sim("--sim-keep-alive", "0.05")
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=_url(service), timeout=30) as client:
        # Held before its first token until three keep-alives came, then let go.
        async with stalled(_url(service), count=1, after=0):
            request = client.build_request("POST", "/generate_stream", json=body)
            response = await client.send(request, stream=True)
            read = response.aiter_lines()
            async for line in read:
                lines.append(line)
                if lines.count(":") == 3:
                    break
        try:
            lines += [line async for line in read]
        finally:
            await response.aclose()
    text = "".join(f"{line}\n" for line in lines)
    assert text.startswith(SSE_KEEPALIVE.decode())
    assert len(sse_json(text)) == 2


async def test_keep_alive_wrapper_passes_errors_and_stops_the_producer() -> None:
    closed = asyncio.Event()

    async def failing() -> Any:
        yield b"a"
        raise ValueError("boom")

    async def endless() -> Any:
        try:
            while True:
                yield b"x"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    failed = with_keep_alive(failing(), 10)
    assert await anext(failed) == b"a"
    with pytest.raises(ValueError, match="boom"):
        await anext(failed)
    stream = with_keep_alive(endless(), 10)
    assert await anext(stream) == b"x"
    await stream.aclose()
    assert closed.is_set()


async def test_merged_streams_interleave_and_finish() -> None:
    async def items(tag: bytes, n: int) -> Any:
        for i in range(n):
            await asyncio.sleep(0.001 * (i + 1))
            yield tag + str(i).encode()

    out = [c async for c in merged([items(b"a", 3), items(b"b", 2)])]
    assert sorted(out) == [b"a0", b"a1", b"a2", b"b0", b"b1"]


async def test_metrics_use_tgis_names(client: httpx.AsyncClient) -> None:
    await client.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
    text = (await client.get("/metrics")).text
    for name in (
        "tgi_request_count",
        "tgi_request_success",
        "tgi_queue_size",
        "tgi_batch_current_size",
        "tgi_batch_current_max_tokens",
    ):
        assert f"# TYPE {name} " in text
    assert "tgi_request_count_total" not in text  # the Rust exporter adds no suffix
    assert _metric(text, "tgi_request_count") == 1
    assert _metric(text, "tgi_request_success") == 1
    for name in (
        "tgi_request_duration",
        "tgi_request_queue_duration",
        "tgi_request_validation_duration",
        "tgi_request_inference_duration",
        "tgi_request_mean_time_per_token_duration",
        "tgi_request_generated_tokens",
        "tgi_request_input_length",
        "tgi_request_max_new_tokens",
    ):
        assert f"# TYPE {name} histogram" in text
        assert _metric(text, f"{name}_count") == 1
    assert _metric(text, "tgi_request_generated_tokens_sum") == 3
    assert 'tgi_request_generated_tokens_bucket{le="+Inf"} 1' in text


async def test_traceparent_and_request_id_are_recorded(client: httpx.AsyncClient) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": tp, "x-request-id": "req-7"}
    await client.post("/generate", json={"inputs": "Hi"}, headers=headers)
    await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}]},
        headers={"traceparent": tp},
    )
    recent = (await client.get("/sim/stats")).json()["recent"]
    assert recent[0] == {"request_id": "req-7", "traceparent": tp}
    assert recent[1]["traceparent"] == tp


_GUARDED = {
    "/": {"inputs": "Hi"},
    "/generate": {"inputs": "Hi"},
    "/generate_stream": {"inputs": "Hi"},
    "/tokenize": {"inputs": "Hi"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Hi"}]},
    "/v1/completions": {"prompt": "Hi"},
}


async def test_api_key_guards_generation_only() -> None:
    async with asgi_client(make_app("--api-key", "s3cret")) as client:
        for path, body in _GUARDED.items():
            for auth in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                refused = await client.post(path, json=body, headers=auth)
                # axum's bare 401: no body, no content type.
                assert (refused.status_code, refused.content) == (401, b""), (path, auth)
                assert "content-type" not in refused.headers
            # TGI compares the whole header case-insensitively.
            ok = await client.post(path, json=body, headers={"authorization": "BEARER S3CRET"})
            assert ok.status_code == 200, path
        # The info routes stay open: health alone cannot tell a client's key is wrong.
        for path in ("/health", "/info", "/v1/models", "/metrics", "/ping", "/"):
            assert (await client.get(path)).status_code == 200, path
        chat = {"messages": [{"role": "user", "content": "Hi"}]}
        assert (await client.post("/chat_tokenize", json=chat)).status_code == 200


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-env")
    assert parse(["--model-id", "m"]).api_key == "from-env"


async def test_prometheus_port(start_sim: Start) -> None:
    port = free_port()
    service = start_sim("--prometheus-port", str(port))
    async with httpx.AsyncClient() as client:
        await client.post(f"{_url(service)}/generate", json={"inputs": "Hi"})
        scraped = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert _metric(scraped.text, "tgi_request_success") == 1
        assert (await client.get(f"http://127.0.0.1:{port}/generate")).status_code == 404


async def test_unknown_routes_are_empty_404s(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert (response.status_code, response.content) == (404, b"")


def test_launcher_flags_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse(
        ["--model-id", "m", "--num-shard", "2", "--cuda-memory-fraction", "0.9",
         "--otlp-endpoint", "http://x:4317", "--sharded", "--hostname", "my-pod-7"]
    )  # fmt: skip
    assert (config.port, config.max_concurrent_requests, config.max_stop_sequences) == (
        3000,
        128,
        4,
    )
    assert (config.max_total_tokens, config.max_input_tokens) == (4096, 4095)
    assert config.hostname == "0.0.0.0"  # not an IP address: all interfaces, as the router does
    assert config.max_running == 128
    with pytest.raises(SystemExit):
        parse(["--max-input-tokens", "100", "--max-total-tokens", "100"])
    assert "`max_input_tokens`(100) must be < `max_total_tokens`(100)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--max-input-tokens", "100", "--max-batch-prefill-tokens", "50"])
    assert "must be >= `max_input_tokens`" in capsys.readouterr().err


async def test_a_failing_generation_is_a_424_or_an_event_never_a_crash(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr("switchyard.enginesim.generation.generate", broken)
    body = {"inputs": "Hi"}
    response = await client.post("/generate", json=body)
    assert response.status_code == 424
    assert response.json() == {
        "error": "Request failed during generation: RuntimeError: the GPU caught fire",
        "error_type": "generation",
    }
    streamed = await client.post("/generate_stream", json=body)
    assert streamed.status_code == 200
    assert sse_json(streamed.text)[0]["error_type"] == "generation"
    stats = (await client.get("/sim/stats")).json()
    assert (stats["failed"], stats["in_flight"], stats["open_streams"]) == (2, 0, 0)
