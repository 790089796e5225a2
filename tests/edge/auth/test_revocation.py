"""A disabled key, and a key revoked before the file shows it: both authenticate as unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.edge.auth import KeyStore, main
from switchyard.edge.auth.keysfile import parse_keys, render_keys

from .support import DEV_KEY, OPS_KEY, entry, keys_yaml, write_keys


def test_a_disabled_key_is_kept_in_the_file_but_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_keys(
        tmp_path / "keys.yaml",
        entry("dev", DEV_KEY, extra="    disabled: true\n"),
        entry("ops", OPS_KEY, extra="    disabled: false\n"),
    )
    store = KeyStore.load(path)
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    assert store.authenticate(f"Bearer {OPS_KEY}") == store.by_name("ops")
    assert store.by_name("dev") is None  # background jobs of a disabled key do not run
    entries = parse_keys(path.read_text())
    text = render_keys(entries)
    assert text.count("disabled") == 1  # written only where true
    assert parse_keys(text) == entries
    capsys.readouterr()  # the store's log lines so far
    assert main(["list", "--file", str(path)]) == 0
    states = [line.split()[-2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert states == ["disabled", "active"]


def test_a_revoked_key_stays_refused_until_the_file_changes(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY), entry("ops", OPS_KEY))
    store = KeyStore.load(path)
    assert store.drop("dev") is True
    assert store.drop("dev") is False  # already gone
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    # The same file (a replica whose copy lags): the revocation holds.
    assert store.reload_if_changed() is False
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    assert store.authenticate(f"Bearer {OPS_KEY}") is not None
    # A new version of the file is the truth again (here: the key re-enabled).
    path.write_text(keys_yaml(entry("dev", DEV_KEY), entry("ops", OPS_KEY), entry("x", "sy-x")))
    assert store.reload_if_changed() is True
    assert store.authenticate(f"Bearer {DEV_KEY}") is not None
