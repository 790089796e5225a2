"""The keys file format: each validation rule gives a clear message and never a full hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.edge.auth import KeysFileError, KeyStore, hash_key
from switchyard.edge.auth.keysfile import Budget, KeyEntry, parse_document, parse_keys, render_keys

from .support import DEV_KEY, OPS_KEY, entry, keys_yaml

DEV_HASH = hash_key(DEV_KEY)
DIGITS_HASH = "1" * 64  # unquoted, YAML reads it as an integer


def test_the_documented_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "# Switchyard edge API keys: only SHA-256 hashes are stored.\n"
        "keys:\n"
        "  - name: dev                 # unique, shown in logs and metrics\n"
        "    tenant: local\n"
        f'    sha256: "{DEV_HASH}"\n'
        '    models: ["*"]\n'
        "    rpm: 600\n"
        "    tpm: 1000000\n"
        "  - name: batch.team_b-2\n"
        "    tenant: team-b\n"
        f"    sha256: {hash_key(OPS_KEY).upper()}\n"
        "    models:\n"
        "      - llama-3.1-8b\n"
        "      - demo-*\n"
        "    rpm: null\n"
    )
    store = KeyStore.load(path)
    assert len(store) == 2
    ops = store.authenticate(f"Bearer {OPS_KEY}")  # upper-case hex is accepted
    assert ops is not None
    assert (ops.name, ops.models, ops.rpm, ops.tpm) == (
        "batch.team_b-2",
        ("llama-3.1-8b", "demo-*"),
        None,
        None,
    )


def test_an_empty_key_list_is_valid() -> None:
    assert parse_keys("keys: []\n") == []


def test_render_round_trips_including_values_yaml_would_misread() -> None:
    entries = [
        KeyEntry(name="no", tenant="123", sha256=DEV_HASH, models=["*", "demo-*"], rpm=5),
        KeyEntry(name="dev", tenant="null", sha256=hash_key(OPS_KEY), models=["a"], tpm=9),
    ]
    text = render_keys(entries)
    assert parse_keys(text) == entries
    assert "  - name: dev\n" in text  # plain where that is unambiguous


def test_a_key_opts_out_of_the_response_cache_with_cache_false() -> None:
    (opted_out, default) = parse_keys(keys_yaml(_dev("    cache: false\n"), entry("ops", OPS_KEY)))
    assert opted_out.api_key().cache is False
    assert default.api_key().cache is True
    # Written back only where it differs from the default, and read back the same.
    text = render_keys([opted_out, default])
    assert text.count("cache: false") == 1
    assert parse_keys(text) == [opted_out, default]


def test_cache_must_be_a_boolean() -> None:
    with pytest.raises(KeysFileError, match=r"keys\[0\] \(name 'dev'\)\.cache"):
        parse_keys(keys_yaml(_dev('    cache: "no"\n')))


def test_entries_never_show_their_hash_in_repr() -> None:
    e = KeyEntry(name="dev", tenant="local", sha256=DEV_HASH, models=["*"])
    assert DEV_HASH not in repr(e)
    assert DEV_HASH not in str(e)


def _dev(extra: str = "", **kwargs: str) -> str:
    return entry("dev", DEV_KEY, extra=extra, **kwargs)


def _bare(name: str, sha256: str, tail: str = '    models: ["*"]\n') -> str:
    return f"  - name: {name}\n    tenant: local\n    sha256: {sha256}\n{tail}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "is empty", id="empty-file"),
        pytest.param("- a\n- b\n", "must be a YAML mapping", id="not-a-mapping"),
        pytest.param("{}\n", "keys: required field is missing", id="no-keys"),
        pytest.param("keys: {}\n", "keys: Input should be a valid list", id="keys-not-list"),
        pytest.param(
            keys_yaml(_dev()) + "extra: 1\n",
            "extra: unknown field (allowed: keys, tenants)",
            id="top-extra",
        ),
        pytest.param(
            keys_yaml(_dev("    rpn: 5\n")),
            "keys[0] (name 'dev').rpn: unknown field (allowed: name, tenant, sha256, role, models, rpm, tpm, cache, priority, budget, disabled)",
            id="entry-extra",
        ),
        pytest.param(
            keys_yaml(_dev(), "  - just-a-string\n"), "keys[1]: Input should be", id="entry-not-map"
        ),
        pytest.param(
            keys_yaml(f'  - tenant: local\n    sha256: "{DEV_HASH}"\n    models: ["*"]\n'),
            "keys[0].name: required field is missing",
            id="missing-name",
        ),
        pytest.param(
            keys_yaml(f'  - name: dev\n    sha256: "{DEV_HASH}"\n    models: ["*"]\n'),
            "keys[0] (name 'dev').tenant: required field is missing",
            id="missing-tenant",
        ),
        pytest.param(
            keys_yaml('  - name: dev\n    tenant: local\n    models: ["*"]\n'),
            "keys[0] (name 'dev').sha256: required field is missing",
            id="missing-sha256",
        ),
        pytest.param(
            keys_yaml(f'  - name: dev\n    tenant: local\n    sha256: "{DEV_HASH}"\n'),
            "keys[0] (name 'dev'): models: a user key needs at least one model (or pattern)",
            id="missing-models",
        ),
        pytest.param(
            keys_yaml(entry("Dev", DEV_KEY)),
            "keys[0].name: String should match pattern",
            id="name-upper-case",
        ),
        pytest.param(
            keys_yaml(entry('"my key"', DEV_KEY)),
            "keys[0].name: String should match pattern",
            id="name-space",
        ),
        pytest.param(
            keys_yaml(entry("-dev", DEV_KEY)), "keys[0].name: String should match", id="name-dash"
        ),
        pytest.param(
            keys_yaml(entry("a" * 65, DEV_KEY)),
            "keys[0].name: String should have at most 64",
            id="name-long",
        ),
        pytest.param(
            keys_yaml(entry("123", DEV_KEY)),
            "keys[0].name: must be a string (quote it",
            id="name-yaml-number",
        ),
        pytest.param(
            keys_yaml(_dev(tenant="Team A")),
            "keys[0] (name 'dev').tenant: String should match pattern",
            id="tenant-pattern",
        ),
        pytest.param(
            keys_yaml(_dev(), entry("dev", OPS_KEY)),
            "keys.yaml: keys[1] has the same name 'dev' as keys[0]",
            id="duplicate-name",
        ),
        pytest.param(
            keys_yaml(_dev(), _bare("ops", DEV_HASH.upper())),
            "keys[1] ('ops') has the same sha256 as keys[0] ('dev')",
            id="duplicate-hash",
        ),
        pytest.param(
            keys_yaml(_bare("dev", f'"{DEV_HASH[:-1]}"')),
            "keys[0] (name 'dev').sha256: must be 64 hex characters",
            id="hash-short",
        ),
        pytest.param(
            keys_yaml(_bare("dev", f'"{DEV_HASH[:-1]}g"')),
            "keys[0] (name 'dev').sha256: must be 64 hex characters",
            id="hash-not-hex",
        ),
        pytest.param(
            keys_yaml(_bare("dev", f'"{DEV_HASH}0"')),
            "keys[0] (name 'dev').sha256: must be 64 hex characters",
            id="hash-long",
        ),
        pytest.param(
            keys_yaml(_bare("dev", DEV_KEY)),
            "keys[0] (name 'dev').sha256: looks like a key, not its hash",
            id="key-instead-of-hash",
        ),
        pytest.param(
            keys_yaml(_bare("dev", DIGITS_HASH)),
            "keys[0] (name 'dev').sha256: must be a string (quote it",
            id="hash-unquoted-digits",
        ),
        pytest.param(
            keys_yaml(_dev(models="[]")),
            "keys[0] (name 'dev'): models: a user key needs at least one model (or pattern)",
            id="models-empty",
        ),
        pytest.param(
            keys_yaml(_dev(models='"*"')),
            "keys[0] (name 'dev').models: Input should be a valid list",
            id="models-not-list",
        ),
        pytest.param(
            keys_yaml(_dev(models='["a", "b c"]')),
            "keys[0] (name 'dev').models[1]: String should match pattern",
            id="model-space",
        ),
        pytest.param(
            keys_yaml(_dev(models='["a", ""]')),
            "keys[0] (name 'dev').models[1]: String should have at least 1 character",
            id="model-empty",
        ),
        pytest.param(
            keys_yaml(_dev("    rpm: 0\n")),
            "keys[0] (name 'dev').rpm: Input should be greater than 0",
            id="rpm-zero",
        ),
        pytest.param(
            keys_yaml(_dev("    tpm: -5\n")),
            "keys[0] (name 'dev').tpm: Input should be greater than 0",
            id="tpm-negative",
        ),
        pytest.param(
            keys_yaml(_dev('    rpm: "600"\n')),
            "keys[0] (name 'dev').rpm: Input should be a valid integer",
            id="rpm-string",
        ),
        pytest.param(
            keys_yaml(_dev("    rpm: true\n")),
            "keys[0] (name 'dev').rpm: Input should be a valid integer",
            id="rpm-bool",
        ),
        pytest.param(
            keys_yaml(_dev("    tpm: 1.5\n")),
            "keys[0] (name 'dev').tpm: Input should be a valid integer",
            id="tpm-float",
        ),
        pytest.param(
            keys_yaml(_dev("    name: other\n")),
            "invalid YAML at line 8, column 5",
            id="yaml-duplicate-field",
        ),
        pytest.param(
            keys_yaml(_bare("dev", f'"{DEV_HASH}')),
            "invalid YAML at line",
            id="yaml-syntax-on-hash-line",
        ),
        pytest.param(keys_yaml(_dev()) + "---\nkeys: []\n", "invalid YAML", id="two-documents"),
    ],
)
def test_each_rule_has_a_clear_message_without_the_hash(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysFileError) as caught:
        KeyStore.load(path)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert not caught.value.io_error
    for secret in (DEV_HASH, DEV_HASH.upper(), DEV_HASH[:-1], DIGITS_HASH, DEV_KEY):
        assert secret not in message


def test_all_problems_are_reported_at_once() -> None:
    text = keys_yaml(_dev("    rpm: 0\n"), entry("Bad", OPS_KEY, extra="    tpm: 0\n"))
    with pytest.raises(KeysFileError) as caught:
        parse_keys(text)
    assert len(caught.value.problems) == 3
    assert "has 3 problems" in str(caught.value)


def test_a_missing_file_is_an_io_error(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError) as caught:
        KeyStore.load(tmp_path / "nope.yaml")
    assert caught.value.io_error
    assert "No such file" in str(caught.value)


def test_binary_content_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_bytes(b"keys: [\xff]\n")
    with pytest.raises(KeysFileError, match="not UTF-8"):
        KeyStore.load(path)


_BUDGETED = (
    "keys:\n"
    "  - name: dev\n"
    "    tenant: team-a\n"
    f'    sha256: "{DEV_HASH}"\n'
    '    models: ["*"]\n'
    "    budget: {tokens: 1000, period: month, output_weight: 4}\n"
)


def test_budgets_per_key_and_per_tenant_round_trip() -> None:
    document = parse_document(
        _BUDGETED + "tenants:\n  team-a:\n    budget: {tokens: 5000, period: 24h}\n"
    )
    (dev,) = document.keys
    assert dev.budget == Budget(tokens=1000, period="month", output_weight=4.0)
    assert document.tenants["team-a"].budget == Budget(tokens=5000, period="24h")
    again = parse_document(render_keys(document.keys, document.tenants))
    assert again == document


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            "    budget: {tokens: 10, period: week}\n",
            "keys[1] (name 'ops').budget.period: unknown period 'week' (day, month, or a "
            "rolling window such as 24h or 30d)",
        ),
        (
            "    budget: {tokens: -5, period: day}\n",
            "keys[1] (name 'ops').budget.tokens: Input should be greater than 0",
        ),
        (
            "    budget: {tokens: 5, period: day, cost: 2}\n",
            "keys[1] (name 'ops').budget.cost: unknown field (allowed: tokens, period, "
            "input_weight, output_weight)",
        ),
        (
            "tenants:\n  team-z:\n    budget: {tokens: 5, period: day}\n",
            "tenants: 'team-z': no key has this tenant",
        ),
    ],
)
def test_a_bad_budget_is_named(tail: str, expected: str) -> None:
    ops = f'  - name: ops\n    tenant: team-b\n    sha256: "{hash_key(OPS_KEY)}"\n    models: [a]\n'
    with pytest.raises(KeysFileError) as refused:
        parse_keys(_BUDGETED + ops + tail)
    assert expected in str(refused.value)
