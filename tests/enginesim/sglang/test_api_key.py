"""`--api-key` and `--admin-api-key` as SGLang 0.5.23 checks them (`srt/utils/auth.py`):
every route but the probes needs the key, unknown paths included; a refusal is
401 `{"error":"Unauthorized"}`; admin routes take the admin key when there is one."""

from __future__ import annotations

import httpx
import pytest

from switchyard.enginesim.sglang.flags import parse
from tests.enginesim.sglang.conftest import asgi, make_app

KEY = "sk-sglang-engine-5d2b"
ADMIN = "sk-sglang-admin-81f0"
UNAUTHORIZED = {"error": "Unauthorized"}

#: (method, path, JSON body) of the routes SGLang guards, a path it does not serve among them.
GUARDED = [
    ("POST", "/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 2}}),
    ("POST", "/v1/completions", {"model": "demo", "prompt": "hi", "max_tokens": 2}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    ("POST", "/v1/embeddings", {"model": "demo", "input": "hi"}),
    ("POST", "/encode", {"text": "hi"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/demo", None),
    ("GET", "/model_info", None),
    ("GET", "/server_info", None),
    ("POST", "/tokenize", {"model": "demo", "prompt": "hi"}),
    ("POST", "/abort_request", {"rid": "nothing"}),
    ("GET", "/ping", None),  # SageMaker's probe does not start with /health or /ready
    ("GET", "/no-such-route", None),
]
#: Served without a key whatever the flags: probes, scrapers and the simulator's own routes.
OPEN = ["/health", "/health_generate", "/ready", "/metrics", "/sim/stats", "/sim/aborts"]


def _ids(routes: list[tuple[str, str, object]]) -> list[str]:
    return [f"{method} {path}" for method, path, _ in routes]


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: object, token: str | None
) -> httpx.Response:
    headers = {} if token is None else {"authorization": token}
    return await client.request(method, path, json=body, headers=headers)


def test_the_flags_are_sglangs() -> None:
    args = parse(["--model-path", "m", "--api-key", KEY, "--admin-api-key", ADMIN])
    assert (args.api_key, args.admin_api_key) == (KEY, ADMIN)
    assert parse(["--model-path", "m"]).api_key is None


@pytest.fixture
async def keyed() -> httpx.AsyncClient:
    return asgi(make_app("--enable-metrics", "--api-key", KEY))


@pytest.mark.parametrize(("method", "path", "body"), GUARDED, ids=_ids(GUARDED))
@pytest.mark.parametrize(
    "token",
    [None, "Bearer not-the-key", f"Basic {KEY}", KEY, f"Bearer {KEY.upper()}", f"Bearer  {KEY}"],
    ids=["missing", "wrong", "other-scheme", "no-scheme", "token-case", "two-spaces"],
)
async def test_without_the_key_every_route_is_401(
    keyed: httpx.AsyncClient, method: str, path: str, body: object, token: str | None
) -> None:
    async with keyed as client:
        response = await _call(client, method, path, body, token)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(("method", "path", "body"), GUARDED, ids=_ids(GUARDED))
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_with_the_key_the_route_answers_as_without_one(
    keyed: httpx.AsyncClient, method: str, path: str, body: object, scheme: str
) -> None:
    async with keyed as client, asgi(make_app("--enable-metrics")) as open_client:
        response = await _call(client, method, path, body, f"{scheme} {KEY}")
        expected = await _call(open_client, method, path, body, None)
    assert response.status_code == expected.status_code != 401
    if path == "/no-such-route":  # routing happens after the key check
        assert response.status_code == 404


@pytest.mark.parametrize("path", OPEN)
async def test_probes_and_metrics_need_no_key(keyed: httpx.AsyncClient, path: str) -> None:
    async with keyed as client:
        response = await client.get(path)
    assert response.status_code == 200


async def test_a_preflight_is_not_refused(keyed: httpx.AsyncClient) -> None:
    async with keyed as client:
        response = await client.options("/v1/models")
    assert response.status_code != 401


async def test_an_empty_key_guards_nothing() -> None:
    # The operator's `--api-key $(VAR)` with an empty Secret value: SGLang treats "" as unset.
    async with asgi(make_app("--api-key", "")) as client:
        assert (await client.get("/v1/models")).status_code == 200


async def test_the_admin_key_alone_guards_only_admin_routes() -> None:
    async with asgi(make_app("--admin-api-key", ADMIN)) as client:
        assert (await client.get("/v1/models")).status_code == 200
        abort = {"rid": "nothing"}
        refused = await client.post("/abort_request", json=abort)
        assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
        accepted = await _call(client, "POST", "/abort_request", abort, f"Bearer {ADMIN}")
        assert accepted.status_code == 200


async def test_with_both_keys_admin_routes_take_only_the_admin_key() -> None:
    async with asgi(make_app("--api-key", KEY, "--admin-api-key", ADMIN)) as client:
        abort = {"rid": "nothing"}
        with_key = await _call(client, "POST", "/abort_request", abort, f"Bearer {KEY}")
        assert (with_key.status_code, with_key.json()) == (401, UNAUTHORIZED)
        with_admin = await _call(client, "POST", "/abort_request", abort, f"Bearer {ADMIN}")
        assert with_admin.status_code == 200
        # ...and the ordinary routes only the ordinary key.
        models = [
            (await _call(client, "GET", "/v1/models", None, f"Bearer {token}")).status_code
            for token in (ADMIN, KEY)
        ]
        assert models == [401, 200]


async def test_a_non_ascii_token_is_refused_not_an_error(keyed: httpx.AsyncClient) -> None:
    async with keyed as client:
        token = [(b"authorization", "Bearer kéy".encode())]  # raw bytes: not latin-1 text
        response = await client.get("/v1/models", headers=token)
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
