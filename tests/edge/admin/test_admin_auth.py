"""Who may call the admin API: only keys with `role: admin`; an admin key calls no model
unless it lists one."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from switchyard.edge.admin import admin_key
from switchyard.edge.auth import KeyStore, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, parse_keys, render_keys
from switchyard.edge.errors import OpenAIError

ADMIN = "sy-admin-secret"
USER = "sy-user-secret"


def _request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "GET", "path": "/admin/v1/keys", "headers": headers})


def _store() -> KeyStore:
    entries = parse_keys(
        "keys:\n"
        f'  - {{name: ops, tenant: platform, sha256: "{hash_key(ADMIN)}", role: admin}}\n'
        f'  - {{name: dev, tenant: team-a, sha256: "{hash_key(USER)}", models: ["*"]}}\n'
    )
    return KeyStore({e.sha256: e.api_key() for e in entries})


def test_an_admin_key_needs_no_models_and_allows_none() -> None:
    key = admin_key(_store(), _request(f"Bearer {ADMIN}"))
    assert (key.name, key.is_admin, key.models) == ("ops", True, ())
    assert not key.allows("anything")


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (f"Bearer {USER}", 403, "admin_only"),
        ("Bearer sy-unknown", 401, "invalid_api_key"),
        (None, 401, "invalid_api_key"),
    ],
)
def test_anyone_but_an_admin_is_refused(authorization: str | None, status: int, code: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        admin_key(_store(), _request(authorization))
    assert (refused.value.status, refused.value.code) == (status, code)


def test_the_role_survives_a_rewrite_of_the_file() -> None:
    admin = KeyEntry(name="ops", tenant="platform", sha256=hash_key(ADMIN), role="admin")
    user = KeyEntry(name="dev", tenant="team-a", sha256=hash_key(USER), models=["a"])
    text = render_keys([admin, user])
    assert parse_keys(text) == [admin, user]
    assert text.count("role:") == 1
    assert "    role: admin\n" in text
