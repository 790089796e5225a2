"""A real edge process whose keys are a Kubernetes Secret (EDGE_KEYS_SECRET, no keys file):
a key made through its admin API works at once for the official SDK, is refused once
disabled, and neither the key nor its hash reaches the edge's log or the Secret as text."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

from switchyard.devstack.components import edge_args, edge_env, write_routes
from switchyard.edge.auth import hash_key
from tests.edge.auth.cluster import ADMIN, NAME, NS, USER, dumped, emulated
from tests.support.processes import free_port, start, wait_http


async def test_an_edge_on_a_keys_secret(tmp_path: Path) -> None:
    async with emulated(tmp_path) as cluster:
        routes = tmp_path / "routes.yaml"
        write_routes(routes, {"vllm": ["127.0.0.1:9"]})  # ready needs a route; never called
        port = free_port()
        env = edge_env("127.0.0.1", port, tmp_path / "unused", routes)
        del env["EDGE_KEYS_FILE"]
        env |= {
            "EDGE_KEYS_SECRET": NAME,
            "EDGE_KEYS_SECRET_NAMESPACE": NS,
            "KUBECONFIG": str(cluster.edges_kubeconfig),
            "EDGE_LOG_FORMAT": "json",
            "EDGE_METRICS_PORT": "0",
        }
        service = await asyncio.to_thread(start, "edge", edge_args(), tmp_path, port=port, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_http, service, f"{url}/readyz")
            async with httpx.AsyncClient(base_url=f"{url}/admin/v1") as admin:
                auth = {"authorization": f"Bearer {ADMIN}"}
                created = await admin.post(
                    "/keys", json={"name": "app", "tenant": "t", "models": ["*"]}, headers=auth
                )
                assert created.status_code == 201, created.text
                secret = created.json()["key"]
                client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
                assert [m.id for m in (await client.models.list()).data] == ["demo-vllm"]
                disabled = await admin.patch("/keys/app", json={"disabled": True}, headers=auth)
                assert disabled.status_code == 200
                with pytest.raises(openai.AuthenticationError):
                    await client.models.list()
                user = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=USER, max_retries=0)
                assert [m.id for m in (await user.models.list()).data] == ["demo-vllm"]
        finally:
            await asyncio.to_thread(service.stop)
        log = service.log_path.read_text()
        assert '"api_keys_loaded"' in log
        for hidden in (secret, hash_key(secret), hash_key(ADMIN), hash_key(USER)):
            assert hidden not in log
        assert secret not in dumped(cluster)
