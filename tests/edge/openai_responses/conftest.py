"""An edge for the Responses API's tests, in front of the feature simulators (tools,
images, reasoning where the engine has a parser), with a second tenant's key and a small
per-response store limit (so that a conversation can pass it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.edge.conftest import settled
from tests.support.edge import Edge, start_edge
from tests.support.stacks import Stack

#: Each key's tenant: "full" and "vllm-only" are one tenant's, "other-tenant" another's.
TENANTS = {"full": "tests", "vllm-only": "tests", "other-tenant": "others"}
#: The store's limit per response (JSON bytes of the response with its conversation).
MAX_BYTES = 65536


def _keyring(directory: Path) -> tuple[dict[str, str], Path]:
    plain = {name: generate_key() for name in TENANTS}
    entries = [
        KeyEntry(
            name=name,
            tenant=tenant,
            sha256=hash_key(plain[name]),
            models=["demo-vllm"] if name == "vllm-only" else ["*"],
        )
        for name, tenant in TENANTS.items()
    ]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return plain, path


@pytest.fixture(scope="session")
async def responses_edge(
    feature_stacks: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    log_dir = tmp_path_factory.mktemp("responses-edge")
    endpoints = {e: [s.address] for e, s in feature_stacks.items()}
    running = await asyncio.to_thread(
        start_edge,
        log_dir,
        endpoints,
        keyring=_keyring(log_dir),
        env={"EDGE_RESPONSES_MAX_BYTES": str(MAX_BYTES)},
        name="edge-responses",
    )
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def responses_quiet_after(
    responses_edge: Edge, feature_stacks: dict[str, Stack]
) -> AsyncIterator[None]:
    """After the test: nothing left in flight at the edge or the engines."""
    yield
    await settled(responses_edge, feature_stacks)
