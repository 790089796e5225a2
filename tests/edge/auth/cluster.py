"""An emulated API server holding the edge's keys Secret, and edge "replicas" on it: each a key
store kept current by its own `SecretKeys` (its own client and watch) with the keys admin
API in front of it, in-process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import kmock
import yaml
from fastapi import FastAPI, Request
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from starlette.responses import Response

from switchyard.edge.admin import keys as admin_keys
from switchyard.edge.auth import KeyStore, hash_key
from switchyard.edge.auth.changes import KeyChanges
from switchyard.edge.auth.keysfile import KeysDocument, parse_document
from switchyard.edge.auth.secret import SecretKeys
from switchyard.edge.errors import OpenAIError
from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.settings import EdgeSettings
from tests.edge.auth.apiserver import SECRETS, SecretsApiServer
from tests.support.kube import write_kubeconfig

NS = "edge-ns"
NAME = "edge-keys"
ADMIN = "sy-admin-key-for-secret-tests-000000000000000"
USER = "sy-user-key-for-secret-tests-1111111111111111"
KEYS = (
    "keys:\n"
    f'  - {{name: ops, tenant: platform, sha256: "{hash_key(ADMIN)}", role: admin}}\n'
    f'  - {{name: dev, tenant: team-a, sha256: "{hash_key(USER)}", models: ["*"]}}\n'
)


def encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Cluster:
    api: SecretsApiServer
    #: The port the edges' clients use (the test's own client uses another).
    edges_port: int
    edges_kubeconfig: Path
    client: AsyncClient  # the test's own

    def secret(self) -> dict[str, Any]:
        found = self.api.find(SECRETS, NS, NAME)
        assert found is not None
        return found

    def document(self) -> KeysDocument:
        text = base64.b64decode(self.secret()["data"]["keys.yaml"]).decode()
        return parse_document(text)

    def names(self) -> list[str]:
        return [entry.name for entry in self.document().keys]

    async def write(self, text: str) -> None:
        """Change the Secret as someone else would (kubectl edit)."""
        secret = await self.client.get(Secret, NAME, namespace=NS)
        secret.data = {"keys.yaml": encode(text)}
        await self.client.replace(secret)

    def edge_requests(self) -> list[kmock.Request]:
        return [r for r in list(self.api.requests) if r.url.port == self.edges_port]


@contextlib.asynccontextmanager
async def emulated(directory: Path) -> AsyncIterator[Cluster]:
    async with (
        SecretsApiServer() as api,
        kmock.Server(api) as for_edges,
        kmock.Server(api) as for_us,
    ):
        api.resources.load_bundled()
        edges = write_kubeconfig(directory / "edges.kubeconfig", str(for_edges.url).rstrip("/"))
        ours = write_kubeconfig(directory / "tests.kubeconfig", str(for_us.url).rstrip("/"))
        client = AsyncClient(config=KubeConfig.from_file(ours), field_manager="tests")
        try:
            await client.create(
                Secret(
                    metadata=ObjectMeta(name=NAME, namespace=NS),
                    data={"keys.yaml": encode(KEYS)},
                )
            )
            yield Cluster(api, for_edges.port, edges, client)
        finally:
            await client.close()


@dataclass
class Replica:
    store: KeyStore
    source: SecretKeys
    #: The admin API, authenticated as the admin key.
    admin: httpx.AsyncClient


def settings(**overrides: Any) -> EdgeSettings:
    values: dict[str, Any] = {
        "routes_file": Path("unused.yaml"),
        "keys_secret": NAME,
        "keys_secret_namespace": NS,
        "keys_secret_retry_s": 0.05,
        **overrides,
    }
    return EdgeSettings(**values)


@contextlib.asynccontextmanager
async def replica(
    cluster: Cluster, monkeypatch: Any, *, redis_url: str | None = None, **overrides: Any
) -> AsyncIterator[Replica]:
    """An edge replica's keys (built as the edge builds them, from its settings), watched
    until the context ends; with `redis_url`, changes announced to the others as well."""
    edge_settings = settings(**overrides)
    monkeypatch.setenv("KUBECONFIG", str(cluster.edges_kubeconfig))
    source = SecretKeys.from_settings(edge_settings)
    try:
        store = await source.open()
    except BaseException:
        await source.close()
        raise
    if redis_url is not None:
        connections = RedisConnections(
            redis_url, max_connections=4, timeout_s=2, connect_timeout_s=2, pool_timeout_s=2
        )
        store.changes = KeyChanges(connections)  # closed when the watch ends
    watch = asyncio.create_task(store.watch(edge_settings.reload_interval_s))
    app = FastAPI()
    edge = SimpleNamespace(keys=store, settings=edge_settings)

    async def error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return exc.response()

    app.add_exception_handler(OpenAIError, error)
    admin_keys.register(app, lambda _: edge)  # type: ignore[arg-type,return-value]
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://edge/admin/v1",
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    try:
        yield Replica(store, source, admin)
    finally:
        await admin.aclose()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)  # closes the source's client


def dumped(cluster: Cluster) -> str:
    return yaml.safe_dump(cluster.secret())
