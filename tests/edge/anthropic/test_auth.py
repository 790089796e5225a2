"""A bare key (Anthropic's `x-api-key` header) authenticates as its bearer form does."""

from __future__ import annotations

from switchyard.edge.auth import ApiKey, KeyStore
from switchyard.edge.auth.keys import MAX_KEY_LENGTH

KEY = "sk-switchyard-test-0123456789"
STORE = KeyStore.of({KEY: ApiKey(name="dev", tenant="t", models=("*",))})


def test_a_bare_key_is_the_bearer_keys_caller() -> None:
    bare = STORE.authenticate_key(KEY)
    assert bare is not None
    assert bare.name == "dev"
    assert STORE.authenticate(f"Bearer {KEY}") is bare


def test_unknown_empty_and_oversized_keys_are_refused() -> None:
    assert STORE.authenticate_key("sk-other") is None
    assert STORE.authenticate_key("") is None
    assert STORE.authenticate_key(KEY + "x" * MAX_KEY_LENGTH) is None
    assert STORE.authenticate(f"Bearer {'x' * (MAX_KEY_LENGTH + 1)}") is None
