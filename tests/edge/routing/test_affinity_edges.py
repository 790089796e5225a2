"""Affinity routing across edge replicas, as real processes: two edges on the same routes
file (policy `session`, which keys by the prompt when no session is given) in front of three
simulator-backed adapters. Each edge picks on its own; the same conversation, or the same
session, must land on the same adapter through either, as the simulators themselves see."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.support.edge import DEFAULT_KEYS, Edge, start_edge, write_keys
from tests.support.polling import eventually
from tests.support.processes import started_together
from tests.support.stacks import Stack, start_stack

MODEL = "demo-vllm"
POLICY = "session"
SYSTEM = "You are a travel assistant. Keep answers short and friendly. " * 4


@dataclass
class Replicas:
    edges: list[Edge]
    stacks: list[Stack]

    def stack(self, address: str) -> Stack:
        (found,) = [s for s in self.stacks if s.address == address]
        return found


def _logged(edge: Edge, event: str) -> list[dict[str, Any]]:
    return [r for r in edge.records() if r.get("event") == event]


async def _use_policy(edge: Edge, policy: str) -> None:
    """Rewrite the edge's routes file with `policy` and wait until the edge reloaded it."""
    routes = yaml.safe_load(edge.routes_file.read_text())
    for model in routes["models"]:
        model["routing"] = {"policy": policy}
    edge.routes_file.write_text(yaml.safe_dump(routes, sort_keys=False))
    await eventually(lambda: _logged(edge, "routes_reloaded"), what="the routes reloaded")


async def _until_all_serving(edge: Edge, addresses: list[str]) -> None:
    """Both edges must hash onto the same set: wait until this one sees every adapter."""

    def serving() -> bool:
        return {r.get("endpoint") for r in _logged(edge, "endpoint_serving")} >= set(addresses)

    await eventually(serving, what="every adapter serving, as the edge sees it")


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    log_dir = tmp_path_factory.mktemp("affinity")
    stack_starts = (
        functools.partial(start_stack, "vllm", log_dir, name=f"-affinity{i}") for i in range(3)
    )
    async with started_together(*stack_starts) as stacks:
        addresses = [s.address for s in stacks]
        keyring = write_keys(log_dir, DEFAULT_KEYS)  # one set of keys for both edges
        edge_starts = (
            functools.partial(start_edge, log_dir, {"vllm": addresses}, name=name, keyring=keyring)
            for name in ("edge-a", "edge-b")
        )
        async with started_together(*edge_starts) as edges:
            for edge in edges:
                await _use_policy(edge, POLICY)
                await _until_all_serving(edge, addresses)
            yield Replicas(edges, stacks)


async def _served_by(replicas: Replicas, edge: Edge, request_id: str) -> str:
    """The adapter that served the request, by the edge's record; its simulator saw it."""
    address = (await edge.record(request_id))["endpoint"]
    async with httpx.AsyncClient(timeout=30) as client:
        stats = (await client.get(f"{replicas.stack(address).sim_url}/sim/stats")).json()
    assert any(request_id in r["request_id"] for r in stats["recent"]), (request_id, address)
    return str(address)


async def test_a_conversation_stays_on_one_adapter_through_either_edge(
    replicas: Replicas,
) -> None:
    served: dict[int, set[str]] = {}
    for conversation in range(12):
        messages: list[dict[str, str]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Plan day {conversation} of a trip to Porto."},
        ]
        for turn in range(3):
            edge = replicas.edges[(conversation + turn) % 2]  # the turns alternate edges
            request_id = f"conv-{conversation}-{turn}-{uuid.uuid4().hex[:8]}"
            async with edge.client() as client:
                answer = await client.chat.completions.create(
                    model=MODEL,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=4,
                    extra_headers={"x-request-id": request_id},
                )
            served.setdefault(conversation, set()).add(await _served_by(replicas, edge, request_id))
            messages += [
                {"role": "assistant", "content": answer.choices[0].message.content or ""},
                {"role": "user", "content": f"And after stop {turn}?"},
            ]
    assert all(len(adapters) == 1 for adapters in served.values()), served
    # The conversations spread: 12 keys on one adapter of 3 would be a broken hash.
    assert len(set().union(*served.values())) >= 2, served


async def test_a_session_stays_on_one_adapter_whatever_its_prompts(replicas: Replicas) -> None:
    for session in ("alice", "bob"):
        served = set()
        for i in range(4):
            edge = replicas.edges[i % 2]
            request_id = f"session-{session}-{i}-{uuid.uuid4().hex[:8]}"
            async with edge.client() as client:
                await client.completions.create(
                    model=MODEL,
                    prompt=f"Unrelated prompt number {i} for {session}",
                    max_tokens=2,
                    user=session,
                    extra_headers={"x-request-id": request_id},
                )
            served.add(await _served_by(replicas, edge, request_id))
        assert len(served) == 1, (session, served)
