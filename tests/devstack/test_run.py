"""`make run` (`python -m switchyard.devstack`) on a machine where ports are already taken.

Only the edge's port is the user's: the simulators, adapters and redis must listen where
the OS says is free, and reach each other, never a stranger on a well-known port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from openai import AsyncOpenAI, BadRequestError, pydantic_function_tool
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from switchyard.devstack.components import EMBEDDING_MODELS, ENGINES, EngineOptions, served_name
from tests.support.processes import free_port
from tests.support.request_matrix import PIXEL

#: What `make run` used before, or would by default: each engine's own port (3000 is also
#: Grafana's), the adapters' 50051-50053, redis's 6379, the metrics ports' 9090.
WELL_KNOWN_PORTS = (8000, 30000, 3000, 50051, 50052, 50053, 6379, 9090)
#: Thirteen processes start on a loaded 2-core machine: a generous bound.
START_S = 240.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * START_S)]


class Stranger:
    """Another stack's server on some ports: answers any HTTP request 200 and counts every
    connection it gets. Ports something else already holds are left to it (taken anyway)."""

    def __init__(self) -> None:
        self.connections: dict[int, int] = {}
        self._servers: list[asyncio.Server] = []

    async def listen(self, ports: Iterable[int]) -> None:
        for port in ports:
            with contextlib.suppress(OSError):
                server = await asyncio.start_server(
                    functools.partial(self._answer, port), "127.0.0.1", port
                )
                self._servers.append(server)
                self.connections[port] = 0

    async def _answer(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections[port] += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def stranger_on(ports: Iterable[int]) -> AsyncIterator[Stranger]:
    stranger = Stranger()
    try:
        await stranger.listen(ports)
        yield stranger
    finally:
        await stranger.close()


async def devstack(state_dir: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.devstack", "--state-dir", str(state_dir), "--quiet", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


async def until_up(process: asyncio.subprocess.Process) -> str:
    """The banner, once the stack says it is up; fails with its stderr if it exits."""
    assert process.stdout is not None
    assert process.stderr is not None
    out: list[str] = []
    async with asyncio.timeout(START_S):
        while line := (await process.stdout.readline()).decode():
            out.append(line)
            if "Ctrl-C stops everything" in line:  # the banner's last line
                return "".join(out)
    pytest.fail(f"the devstack stopped: {''.join(out)}{(await process.stderr.read()).decode()}")


async def stop(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C, as a user stops it; it stops its processes and exits. If it has not within a
    minute, the failure says what it printed meanwhile and which processes it left."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        said: list[bytes] = []

        async def drain(stream: asyncio.StreamReader | None) -> None:
            while stream is not None and (chunk := await stream.read(65536)):
                said.append(chunk)

        try:
            async with asyncio.timeout(60):
                await asyncio.gather(drain(process.stdout), drain(process.stderr))
                await process.wait()
        except TimeoutError:
            left = await _descendants(process.pid)
            process.kill()
            pytest.fail(
                f"the devstack did not stop within 60 s of Ctrl-C; still running: {left}\n"
                + b"".join(said).decode(errors="replace")[-6000:]
            )
    assert process.returncode is not None
    return process.returncode


async def _descendants(pid: int) -> str:
    """`ps` lines of the processes below `pid` (what keeps the stack's output open)."""
    ps = await asyncio.create_subprocess_exec(
        "ps", "-e", "-o", "pid=,ppid=,stat=,args=", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await ps.communicate()
    rows = [line.split(None, 3) for line in out.decode().splitlines() if line.strip()]
    children: dict[str, list[list[str]]] = {}
    for row in rows:
        children.setdefault(row[1], []).append(row)
    found, todo = [], [str(pid)]
    while todo:
        for row in children.get(todo.pop(), []):
            found.append(" ".join(row)[:160])
            todo.append(row[0])
    return "; ".join(found) or "none"


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str


async def serves_the_demo_features(client: AsyncOpenAI, engine: str) -> None:
    """A demo model answers, keeps reasoning apart where its engine can (vLLM and SGLang
    run a reasoning parser in `make run`, TGI has none), calls a tool, and reads an image."""
    model = served_name(engine)
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
    reply = await client.chat.completions.create(model=model, messages=hello, max_tokens=200)
    message = reply.choices[0].message
    assert message.content, engine
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert bool(reasoning) is (engine != "tgi"), (engine, reasoning)

    ask: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris? Use GetWeather."}
    ]
    called = await client.chat.completions.create(
        model=model, messages=ask, tools=[pydantic_function_tool(GetWeather)]
    )
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls", engine
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "GetWeather"
    GetWeather.model_validate_json(call.function.arguments)

    picture: list[ChatCompletionMessageParam] = [{"role": "user", "content": [
        {"type": "text", "text": "Hello!"}, {"type": "image_url", "image_url": {"url": PIXEL}},
    ]}]  # fmt: skip
    seen = await client.chat.completions.create(model=model, messages=picture, max_tokens=200)
    assert seen.usage is not None
    assert reply.usage is not None
    assert seen.usage.prompt_tokens > reply.usage.prompt_tokens, engine  # the image counted


async def serves_embeddings(client: AsyncOpenAI, model: str) -> None:
    """An embedding model answers vectors of its full size, and shorter ones when asked
    (`make run` serves them Matryoshka-capable), and refuses to chat."""
    full = await client.embeddings.create(model=model, input="Hello!")
    (vector,) = full.data
    assert len(vector.embedding) == EngineOptions().embedding_dimensions, model
    short = await client.embeddings.create(model=model, input=["Hello!", "Hi!"], dimensions=64)
    assert [len(item.embedding) for item in short.data] == [64, 64], model
    assert short.usage.prompt_tokens > 0
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
    with pytest.raises(BadRequestError, match="does not support chat completions"):
        await client.chat.completions.create(model=model, messages=hello)


async def the_printed_python_example_runs(banner: str) -> None:
    """The banner's Python example, pasted as it is, against the stack it came from."""
    found = re.search(r"python - <<'EOF'\n(.*?)\n\s*EOF", banner, flags=re.DOTALL)
    assert found is not None, banner
    code = "\n".join(line.removeprefix("  ") for line in found.group(1).splitlines())
    example = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(START_S):
        out, err = await example.communicate()
    assert example.returncode == 0, err.decode()
    reasoning_and_answer, tool_calls, vectors, chained, message = out.decode().splitlines()
    assert " -> " in reasoning_and_answer
    assert not reasoning_and_answer.startswith("None ")  # demo-sglang's reasoning
    assert "name='get_weather'" in tool_calls
    assert vectors == "2 vectors of 64"
    # The second response read the first one's conversation: more than its own input.
    read = re.fullmatch(r".* (\d+) tokens read", chained)
    assert read is not None, chained
    assert int(read.group(1)) > 10, chained
    assert message.endswith((" end_turn", " max_tokens")), message


async def test_taken_well_known_ports_neither_stop_the_stack_nor_reach_it(
    tmp_path: Path,
) -> None:
    edge_port = free_port()
    async with stranger_on(WELL_KNOWN_PORTS) as stranger:
        assert stranger.connections, "every well-known port is taken here: nothing to test"
        # Two workers: the edges share rate limits through a redis the stack starts too.
        process = await devstack(
            tmp_path / "state", "--edge-port", str(edge_port), "--workers", "2",
            "--ttft", "0.001", "--itl", "0.001",
        )  # fmt: skip
        try:
            banner = await until_up(process)
            assert f"http://127.0.0.1:{edge_port}" in banner
            key = (tmp_path / "state" / "dev-key").read_text().strip()
            client = AsyncOpenAI(base_url=f"http://127.0.0.1:{edge_port}/v1", api_key=key)
            async with client:
                for engine in ENGINES:
                    await serves_the_demo_features(client, engine)
                for model in EMBEDDING_MODELS.values():
                    await serves_embeddings(client, model)
            await the_printed_python_example_runs(banner)
        finally:
            returncode = await stop(process)
        assert returncode == 0
        # The adapters reached the stack's own simulators: the stranger saw nobody.
        assert stranger.connections == dict.fromkeys(stranger.connections, 0)


async def test_a_taken_edge_port_fails_at_once_with_a_clear_message(tmp_path: Path) -> None:
    async with stranger_on([free_port()]) as stranger:
        (edge_port,) = stranger.connections
        process = await devstack(tmp_path / "state", "--edge-port", str(edge_port))
        async with asyncio.timeout(START_S):
            out, err = await process.communicate()

    assert process.returncode == 1
    message = err.decode()
    assert f"127.0.0.1:{edge_port}" in message
    assert "already in use" in message
    assert "--edge-port" in message  # how to choose another
    assert b"Switchyard is up" not in out
    assert stranger.connections == {edge_port: 0}
