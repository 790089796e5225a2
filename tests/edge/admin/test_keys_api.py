"""The keys admin API's routes on one replica: what each change writes and what it refuses
(with nothing written). The routes run in-process against a real keys file and key store;
across replicas: test_keys_replicas.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response

from switchyard.edge.admin import keys as admin_keys
from switchyard.edge.auth import ApiKey, KeyStore, hash_key
from switchyard.edge.auth.changes import KeyChanges
from switchyard.edge.auth.keysfile import read_keys_document
from switchyard.edge.errors import OpenAIError
from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.settings import EdgeSettings
from tests.support.processes import free_port

ADMIN = "sy-admin-key-for-tests-only-00000000000000000"
USER = "sy-user-key-for-tests-only-111111111111111111"
KEYS_FILE = (
    "keys:\n"
    f'  - {{name: ops, tenant: platform, sha256: "{hash_key(ADMIN)}", role: admin}}\n'
    f'  - {{name: dev, tenant: team-a, sha256: "{hash_key(USER)}", models: ["*"]}}\n'
    'tenants:\n  team-a:\n    budget: {tokens: 1000, period: "day"}\n'
)


def _app(keys: KeyStore) -> FastAPI:
    app = FastAPI()
    edge = SimpleNamespace(keys=keys, settings=EdgeSettings(routes_file=Path("unused.yaml")))

    async def _error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return exc.response()

    app.add_exception_handler(OpenAIError, _error)
    admin_keys.register(app, lambda _: edge)  # type: ignore[arg-type,return-value]
    return app


def _text(path: Path) -> str:
    return path.read_text()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS_FILE)
    return path


@pytest.fixture
def store(keys_file: Path) -> KeyStore:
    return KeyStore.load(keys_file)


@pytest.fixture
async def api(store: KeyStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(store))
    headers = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://edge/admin/v1", headers=headers
    ) as client:
        yield client


async def test_a_created_key_works_at_once_and_its_secret_is_shown_once(
    api: httpx.AsyncClient, store: KeyStore, keys_file: Path
) -> None:
    body = {"name": "new", "tenant": "team-a", "models": ["demo-*"], "rpm": 5, "cache": False}
    created = await api.post("/keys", json=body)
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    assert secret.startswith("sy-")
    assert created.json() | {"key": None} == {
        "object": "key",
        "name": "new",
        "tenant": "team-a",
        "role": "user",
        "models": ["demo-*"],
        "rpm": 5,
        "tpm": None,
        "cache": False,
        "priority": None,
        "budget": None,
        "disabled": False,
        "hash_prefix": hash_key(secret)[:8],
        "key": None,
    }
    key = store.authenticate(f"Bearer {secret}")  # this replica: before the call returned
    assert key is not None
    assert (key.name, key.allows("demo-a"), key.allows("other")) == ("new", True, False)
    assert hash_key(secret) in _text(keys_file)
    assert secret not in _text(keys_file)
    listed, one = await api.get("/keys"), await api.get("/keys/new")
    assert [k["name"] for k in listed.json()["data"]] == ["ops", "dev", "new"]
    assert one.json() == listed.json()["data"][2]
    for response in (listed, one):
        for hidden in (secret, hash_key(secret), hash_key(USER), hash_key(ADMIN)):
            assert hidden not in response.text


async def test_disable_enable_delete_and_budgets(
    api: httpx.AsyncClient, store: KeyStore, keys_file: Path
) -> None:
    disabled = await api.patch("/keys/dev", json={"disabled": True})
    assert (disabled.status_code, disabled.json()["disabled"]) == (200, True)
    assert store.authenticate(f"Bearer {USER}") is None
    assert "    disabled: true\n" in _text(keys_file)
    enabled = await api.patch("/keys/dev", json={"disabled": False, "rpm": 7})
    assert (enabled.json()["disabled"], enabled.json()["rpm"]) == (False, 7)
    assert store.authenticate(f"Bearer {USER}") == store.by_name("dev")
    assert "disabled" not in _text(keys_file)

    budget = {"tokens": 500, "period": "30d", "output_weight": 4}
    patched = await api.patch("/keys/dev", json={"budget": budget})
    assert patched.json()["budget"] == {**budget, "input_weight": 1.0, "output_weight": 4.0}
    removed = await api.patch("/keys/dev", json={"budget": None})
    assert removed.json()["budget"] is None
    assert read_keys_document(keys_file)[0].keys[1].budget is None

    put = await api.put("/tenants/team-a/budget", json={"tokens": 9, "period": "month"})
    assert put.status_code == 200, put.text
    assert put.json()["budget"]["tokens"] == 9
    stored = read_keys_document(keys_file)[0].tenants["team-a"].budget
    assert stored is not None
    assert stored.model_dump() == put.json()["budget"]
    # The tenant's last key goes only once its budget has.
    refused = await api.delete("/keys/dev")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "tenant_in_use")
    assert (await api.delete("/tenants/team-a/budget")).status_code == 200
    assert read_keys_document(keys_file)[0].tenants == {}
    assert (await api.delete("/tenants/team-a/budget")).status_code == 404
    deleted = await api.delete("/keys/dev")
    assert deleted.json() == {"object": "key", "name": "dev", "deleted": True}
    assert store.authenticate(f"Bearer {USER}") is None
    assert (await api.get("/keys/dev")).status_code == 404


async def test_the_last_admin_key_cannot_disable_or_delete_itself(
    api: httpx.AsyncClient, store: KeyStore
) -> None:
    for refused in (
        await api.patch("/keys/ops", json={"disabled": True}),
        await api.delete("/keys/ops"),
    ):
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "last_admin")
    second = await api.post("/keys", json={"name": "ops2", "tenant": "platform", "role": "admin"})
    assert second.status_code == 201
    assert (await api.delete("/keys/ops")).status_code == 200  # another admin remains
    assert (await api.get("/keys")).status_code == 401  # the deleted key, refused at once
    assert store.authenticate(f"Bearer {second.json()['key']}") is not None


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "param"),
    [
        ("POST", "/keys", {"name": "dev", "tenant": "t", "models": ["a"]}, 409, "name"),
        ("POST", "/keys", {"name": "x", "tenant": "t", "models": ["a"], "budget": {"tokens": 5, "period": "week"}}, 400, "budget.period"),
        ("POST", "/keys", {"name": "x", "tenant": "t", "models": ["a"], "budget": {"tokens": -5, "period": "day"}}, 400, "budget.tokens"),
        ("POST", "/keys", {"name": "x", "tenant": "t"}, 400, None),  # a user key needs models
        ("POST", "/keys", {"name": "x", "tenant": "t", "models": ["a"], "sha256": "0" * 64}, 400, "sha256"),
        ("POST", "/keys", {"name": "Bad Name", "tenant": "t", "models": ["a"]}, 400, "name"),
        ("POST", "/keys", {"tenant": "t", "models": ["a"]}, 400, "name"),
        ("POST", "/keys", ["not", "an", "object"], 400, None),
        ("PATCH", "/keys/nobody", {"rpm": 5}, 404, None),
        ("PATCH", "/keys/dev", {"rpm": 0}, 400, "rpm"),
        ("PATCH", "/keys/dev", {"name": "renamed"}, 400, "name"),
        ("PATCH", "/keys/dev", {"priority": "no-such-class"}, 400, "priority"),
        ("DELETE", "/keys/nobody", None, 404, None),
        ("PUT", "/tenants/nobody/budget", {"tokens": 5, "period": "day"}, 404, None),
        ("PUT", "/tenants/team-a/budget", {"tokens": -1, "period": "day"}, 400, "budget.tokens"),
        ("PUT", "/tenants/team-a/budget", {"tokens": 5, "period": "fortnight"}, 400, "budget.period"),
        ("DELETE", "/tenants/platform/budget", None, 404, None),
    ],
)  # fmt: skip
async def test_bad_input_is_refused_and_changes_nothing(
    api: httpx.AsyncClient,
    keys_file: Path,
    method: str,
    url: str,
    body: Any,
    status: int,
    param: str | None,
) -> None:
    before = _text(keys_file)
    response = await api.request(method, url, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["type"] in ("invalid_request_error", "server_error")
    if param is not None:
        assert error["param"] == param, error
        assert param in error["message"], error
    assert _text(keys_file) == before


async def test_a_body_that_is_not_json_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/keys", content=b"{name: x")
    assert (response.status_code, response.json()["error"]["type"]) == (
        400,
        "invalid_request_error",
    )


ROUTES = [
    ("POST", "/keys"),
    ("GET", "/keys"),
    ("GET", "/keys/dev"),
    ("PATCH", "/keys/dev"),
    ("DELETE", "/keys/dev"),
    ("PUT", "/tenants/team-a/budget"),
    ("DELETE", "/tenants/team-a/budget"),
]


@pytest.mark.parametrize(("method", "url"), ROUTES)
async def test_only_an_admin_key_may_call_any_route(
    api: httpx.AsyncClient, keys_file: Path, method: str, url: str
) -> None:
    before = _text(keys_file)
    body = {"tokens": 1, "period": "day"} if method == "PUT" else {"disabled": True}
    user = await api.request(method, url, json=body, headers={"authorization": f"Bearer {USER}"})
    assert (user.status_code, user.json()["error"]["code"]) == (403, "admin_only")
    nobody = await api.request(method, url, json=body, headers={"authorization": ""})
    assert nobody.status_code == 401
    assert _text(keys_file) == before


async def test_an_edge_without_a_keys_file_says_so() -> None:
    admin = ApiKey("ops", "platform", (), role="admin")
    transport = httpx.ASGITransport(app=_app(KeyStore.of({ADMIN: admin})))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.get("/admin/v1/keys", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 501
    assert response.json()["error"]["code"] == "no_keys_file"
    assert "EDGE_KEYS_FILE" in response.json()["error"]["message"]


async def test_without_redis_the_change_is_written_and_the_header_says_unknown(
    api: httpx.AsyncClient, store: KeyStore
) -> None:
    unreachable = RedisConnections(
        f"redis://127.0.0.1:{free_port()}/0",
        max_connections=1,
        timeout_s=1,
        connect_timeout_s=1,
        pool_timeout_s=1,
    )
    store.changes = KeyChanges(unreachable)
    try:
        disabled = await api.patch("/keys/dev", json={"disabled": True})
    finally:
        await unreachable.close()
    assert disabled.status_code == 200
    assert disabled.headers[admin_keys.REPLICAS_HEADER] == "unknown"
    assert store.authenticate(f"Bearer {USER}") is None  # this replica: at once all the same
