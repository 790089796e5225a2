"""Keys themselves: generation, hashing, and which models a key may use."""

from __future__ import annotations

import hashlib
import re

import pytest

from switchyard.edge.auth import ApiKey, generate_key, hash_key


def test_hash_key_is_hex_sha256_of_the_whole_key() -> None:
    assert hash_key("sy-abc") == hashlib.sha256(b"sy-abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key("x"))


def test_generated_keys_are_prefixed_random_and_bearer_safe() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(r"sy-[A-Za-z0-9_-]{43}", key)


def _key(*models: str) -> ApiKey:
    return ApiKey(name="k", tenant="t", models=models, rpm=None, tpm=None)


def test_allows_exact_names_only_exactly() -> None:
    key = _key("llama-3.1-8b", "qwen")
    assert key.allows("llama-3.1-8b")
    assert key.allows("qwen")
    assert not key.allows("llama-3.1-8b-instruct")
    assert not key.allows("Qwen")  # case-sensitive, like served model names
    assert not key.allows("")


def test_alias_grant_does_not_extend_to_other_names() -> None:
    key = _key("llama")  # an alias
    assert key.allows("llama")
    assert not key.allows("llama-3.1-8b")
    # The edge passes both the name the client sent and the served name it resolves to.
    assert key.allows_any("llama-3.1-8b", "llama")
    assert not key.allows_any("llama-3.1-8b", "qwen")


@pytest.mark.parametrize(
    ("pattern", "allowed", "refused"),
    [
        ("demo-*", ["demo-", "demo-a", "demo-a.b/c"], ["demo", "xdemo-a", "Demo-a"]),
        ("llama-?b", ["llama-8b"], ["llama-70b", "llama-b"]),
        ("model-[ab]", ["model-a", "model-b"], ["model-c", "model-ab"]),
        ("*-instruct", ["llama-instruct"], ["llama-instruct-v2"]),
    ],
)
def test_allows_fnmatch_patterns(pattern: str, allowed: list[str], refused: list[str]) -> None:
    key = _key("exact", pattern)
    assert key.allows("exact")
    assert all(key.allows(m) for m in allowed)
    assert not any(key.allows(m) for m in refused)


def test_star_allows_every_model() -> None:
    key = _key("*")
    assert all(key.allows(m) for m in ["llama-3.1-8b", "a", "x/y:z", ""])


def test_regex_characters_in_names_are_literal() -> None:
    key = _key("a.b", "c+*")
    assert key.allows("a.b")
    assert not key.allows("axb")
    assert key.allows("c+d")
    assert not key.allows("cd")


def test_api_key_equality_and_repr_ignore_the_derived_matchers() -> None:
    assert _key("a", "b-*") == _key("a", "b-*")
    assert (
        repr(_key("a"))
        == "ApiKey(name='k', tenant='t', models=('a',), rpm=None, tpm=None, cache=True, "
        "priority=None, role='user', budget=None)"
    )
