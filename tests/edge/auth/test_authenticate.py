"""`KeyStore.authenticate`: the raw Authorization header in, the key's identity (or None) out."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.edge.auth import ApiKey, KeyStore, hash_key
from switchyard.edge.auth.keys import MAX_KEY_LENGTH

from .support import DEV_KEY, OPS_KEY, entry, write_keys


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    path = write_keys(
        tmp_path / "keys.yaml",
        entry("dev", DEV_KEY, extra="    rpm: 600\n    tpm: 1000000\n"),
        entry("ops", OPS_KEY, tenant="platform", models='["demo-*", "llama"]'),
    )
    return KeyStore.load(path)


def test_good_key_gives_its_identity_and_limits(store: KeyStore) -> None:
    key = store.authenticate(f"Bearer {DEV_KEY}")
    assert key == ApiKey(name="dev", tenant="local", models=("*",), rpm=600, tpm=1_000_000)
    ops = store.authenticate(f"Bearer {OPS_KEY}")
    assert ops is not None
    assert (ops.name, ops.tenant, ops.models, ops.rpm, ops.tpm) == (
        "ops",
        "platform",
        ("demo-*", "llama"),
        None,
        None,
    )
    assert len(store) == 2


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(store: KeyStore, scheme: str) -> None:
    key = store.authenticate(f"{scheme} {DEV_KEY}")
    assert key is not None
    assert key.name == "dev"


@pytest.mark.parametrize(
    "header",
    [f"Bearer   {DEV_KEY}", f"  Bearer {DEV_KEY}  ", f"Bearer\t{DEV_KEY}", f"Bearer {DEV_KEY}\r\n"],
)
def test_extra_whitespace_around_and_between_is_tolerated(store: KeyStore, header: str) -> None:
    key = store.authenticate(header)
    assert key is not None
    assert key.name == "dev"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        DEV_KEY,  # no scheme
        f"Basic {DEV_KEY}",
        f"Token {DEV_KEY}",
        f"Bearer: {DEV_KEY}",
        f"Bearer {DEV_KEY} extra",
        f"Bearer {DEV_KEY[:-1]}",
        f"Bearer {DEV_KEY}x",
        f"Bearer {DEV_KEY.upper()}",
        "Bearer sy-not-a-key",
        f"Bearer {hash_key(DEV_KEY)}",  # the stored hash is not a credential
        f"Bearer {hash_key(DEV_KEY).upper()}",
        "Bearer " + "x" * (MAX_KEY_LENGTH + 1),
    ],
)
def test_missing_malformed_and_unknown_are_refused(store: KeyStore, header: str | None) -> None:
    assert store.authenticate(header) is None


def test_empty_store_refuses_everything() -> None:
    store = KeyStore.empty()
    assert len(store) == 0
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    assert store.path is None
    assert store.reload_if_changed() is False


def test_in_memory_store_from_plain_keys() -> None:
    dev = ApiKey(name="dev", tenant="local", models=("*",), rpm=None, tpm=None)
    store = KeyStore.of({DEV_KEY: dev})
    assert store.authenticate(f"Bearer {DEV_KEY}") is dev
    assert store.authenticate(f"Bearer {OPS_KEY}") is None
    assert list(store) == [dev]
