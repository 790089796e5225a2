"""Where budgets come from: the keys file (a key's, its tenant's, reloaded together) and
the edge's settings (the zone, the store)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from switchyard.edge.auth import KeyStore, generate_key, hash_key
from switchyard.edge.auth.keysfile import Budget, KeyEntry, TenantEntry, render_keys
from switchyard.edge.budget import scopes_of
from switchyard.edge.settings import EdgeSettings


def _write(path: Path, tenant_tokens: int, key_budget: Budget | None) -> str:
    secret = generate_key()
    entry = KeyEntry(
        name="k1", tenant="acme", sha256=hash_key(secret), models=["*"], budget=key_budget
    )
    tenants = {"acme": TenantEntry(budget=Budget(tokens=tenant_tokens, period="day"))}
    path.write_text(render_keys([entry], tenants))
    return secret


def test_a_key_and_its_tenant_budgets_load_and_reload_together(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    own = Budget(tokens=500, period="24h", output_weight=3.0)
    secret = _write(path, 1000, own)
    store = KeyStore.load(path)
    key = store.authenticate_key(secret)
    assert key is not None
    assert key.budget == own
    scopes = scopes_of(key, store.tenant_budgets)
    assert [(s.kind, s.name, s.budget.tokens) for s in scopes] == [
        ("key", "k1", 500),
        ("tenant", "acme", 1000),
    ]

    secret = _write(path, 2000, None)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert store.reload_if_changed()
    key = store.authenticate_key(secret)
    assert key is not None
    assert key.budget is None
    assert [(s.kind, s.budget.tokens) for s in scopes_of(key, store.tenant_budgets)] == [
        ("tenant", 2000)
    ]


def test_settings_name_the_zone_and_where_budgets_live(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    settings = EdgeSettings(routes_file=routes, budget_timezone="Europe/Paris")
    assert settings.budget_zone.key == "Europe/Paris"
    assert settings.budget_backend == "memory"  # as the rate limiter
    shared = EdgeSettings(
        routes_file=routes,
        rate_limit_backend="redis",
        redis_url=SecretStr("redis://127.0.0.1:6379/0"),
    )
    assert shared.budget_backend == "redis"
    with pytest.raises(ValidationError, match="EDGE_BUDGET_TIMEZONE: unknown time zone"):
        EdgeSettings(routes_file=routes, budget_timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError, match="EDGE_BUDGET_STORE=redis needs EDGE_REDIS_URL"):
        EdgeSettings(routes_file=routes, budget_store="redis")
    with pytest.raises(ValidationError, match="EDGE_BUDGET_STORE=redis"):
        EdgeSettings(
            routes_file=routes,
            workers=2,
            rate_limit_backend="redis",
            redis_url=SecretStr("redis://127.0.0.1:6379/0"),
            budget_store="memory",
        )
