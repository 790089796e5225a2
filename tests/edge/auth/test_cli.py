"""The keys CLI end to end, as an operator runs it: a real process, a real file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.edge.auth import KeyStore, hash_key, main

from .support import DEV_KEY, entry, write_keys


def keys(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.edge.auth", "keys", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_add_prints_a_working_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    result = keys(
        "add", "--file", path, "--name", "dev", "--tenant", "local",
        "--models", "llama-3.1-8b,demo-*", "--rpm", "600", "--tpm", "1000000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert result.stdout == key + "\n"  # nothing else on stdout: KEY=$(...) works
    assert key.startswith("sy-")
    assert "not be shown again" in result.stderr
    assert key not in result.stderr

    text = path.read_text()
    assert key not in text
    assert hash_key(key) in text
    assert text.startswith("# Switchyard edge API keys: only SHA-256 hashes are stored.\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temp files left; the lock file stays (removing it would race with a waiting writer).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keys.yaml.lock", "keys.yaml"]

    api_key = KeyStore.load(path).authenticate(f"Bearer {key}")
    assert api_key is not None
    assert (api_key.name, api_key.tenant, api_key.models, api_key.rpm, api_key.tpm) == (
        "dev",
        "local",
        ("llama-3.1-8b", "demo-*"),
        600,
        1_000_000,
    )


def test_add_with_the_admin_role_makes_a_key_that_calls_no_model(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    admin = keys("add", "--file", path, "--name", "ops", "--role", "admin")
    both = keys("add", "--file", path, "--name", "ops2", "--role", "admin", "--models", "demo-*")
    user = keys("add", "--file", path, "--name", "app")
    assert admin.returncode == both.returncode == user.returncode == 0, (admin, both, user)

    store = KeyStore.load(path)
    ops, ops2, app = (store.authenticate(f"Bearer {r.stdout.strip()}") for r in (admin, both, user))
    assert ops is not None
    assert ops2 is not None
    assert app is not None
    assert (ops.is_admin, ops.models) == (True, ())
    assert (ops2.is_admin, ops2.models) == (True, ("demo-*",))
    assert (app.is_admin, app.models) == (False, ("*",))
    assert "role: admin" in path.read_text()

    refused = keys("add", "--file", path, "--name", "x", "--role", "root")
    assert refused.returncode == 2
    assert "invalid choice: 'root'" in refused.stderr


def test_add_appends_keeps_the_mode_and_refuses_a_duplicate_name(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    path.chmod(0o640)
    added = keys("add", "--file", path, "--name", "ops")
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    store = KeyStore.load(path)
    ops = store.authenticate(f"Bearer {added.stdout.strip()}")
    assert ops is not None
    assert (ops.tenant, ops.models, ops.rpm, ops.tpm) == ("default", ("*",), None, None)
    assert ops.cache  # the response cache is on for a key unless it opts out
    assert store.authenticate(f"Bearer {DEV_KEY}") is not None

    before = path.read_bytes()
    dup = keys("add", "--file", path, "--name", "dev")
    assert dup.returncode == 2
    assert dup.stdout == ""
    assert "a key named 'dev' already exists" in dup.stderr
    assert path.read_bytes() == before


def test_list_shows_every_field_and_only_hash_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    first = keys("add", "--file", path, "--name", "dev", "--rpm", "600", "--tenant", "local")
    second = keys(
        "add", "--file", path, "--name", "batch", "--models", "a,b-*", "--tpm", "5000", "--no-cache"
    )
    assert first.returncode == second.returncode == 0
    result = keys("list", "--file", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "TENANT",
        "MODELS",
        "RPM",
        "TPM",
        "CACHE",
        "PRIORITY",
        "ROLE",
        "STATE",
        "SHA256",
    ]
    dev_hash = hash_key(first.stdout.strip())
    batch_hash = hash_key(second.stdout.strip())
    assert lines[1].split() == [
        "dev", "local", "*", "600", "-", "on", "-", "user", "active", dev_hash[:8]
    ]  # fmt: skip
    assert lines[2].split() == [
        "batch",
        "default",
        "a,b-*",
        "-",
        "5000",
        "off",
        "-",
        "user",
        "active",
        batch_hash[:8],
    ]
    for full in (dev_hash, batch_hash):
        assert full[:9] not in result.stdout + result.stderr


def test_remove_deletes_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    dev = keys("add", "--file", path, "--name", "dev").stdout.strip()
    ops = keys("add", "--file", path, "--name", "ops").stdout.strip()
    result = keys("remove", "--file", path, "--name", "dev")
    assert result.returncode == 0, result.stderr
    assert "removed key 'dev'" in result.stderr
    store = KeyStore.load(path)
    assert store.authenticate(f"Bearer {dev}") is None
    assert store.authenticate(f"Bearer {ops}") is not None

    missing = keys("remove", "--file", path, "--name", "dev")
    assert missing.returncode == 2
    assert "no key named 'dev'" in missing.stderr
    assert keys("remove", "--file", path, "--name", "ops").returncode == 0
    assert len(KeyStore.load(path)) == 0


def test_hash_reads_the_key_from_stdin(tmp_path: Path) -> None:
    result = keys("hash", stdin=f"{DEV_KEY}\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == hash_key(DEV_KEY) + "\n"
    empty = keys("hash", stdin="\n")
    assert empty.returncode == 2
    assert "no key" in empty.stderr


# The rest runs `main` in-process: same code path after argv, without a process per case.


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["add", "--name", "dev"], "--file"),
        (["add", "--file", "{f}", "--name", "Dev"], "--name: 'Dev': use lower-case"),
        (["add", "--file", "{f}", "--name", "dev", "--rpm", "0"], "--rpm: must be positive"),
        (["add", "--file", "{f}", "--name", "dev", "--tpm", "lots"], "not a whole number"),
        (["add", "--file", "{f}", "--name", "dev", "--models", " , "], "at least one model"),
        (["add", "--file", "{f}", "--name", "dev", "--models", "a b"], "cannot contain spaces"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    path = tmp_path / "keys.yaml"
    assert main([a.replace("{f}", str(path)) for a in argv]) == 2
    out = capsys.readouterr()
    assert expected in out.err
    assert out.out == ""
    assert not path.exists()


def test_argv_may_start_with_keys_or_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    assert main(["keys", "list", "--file", str(path)]) == 0
    assert main(["list", "--file", str(path)]) == 0
    assert capsys.readouterr().out.count("dev") == 2
    assert main(["keys", "--help"]) == 0


def test_an_invalid_file_is_not_touched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - name: dev\n")
    for argv in (["add", "--name", "ops"], ["list"], ["remove", "--name", "dev"]):
        assert main(["keys", *argv, "--file", str(path)]) == 2
        assert "keys[0] (name 'dev').tenant: required field is missing" in capsys.readouterr().err
    assert path.read_text() == "keys:\n  - name: dev\n"


def test_io_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--file", str(tmp_path / "nope.yaml")]) == 1
    assert "No such file" in capsys.readouterr().err
    assert main(["keys", "remove", "--file", str(tmp_path / "nope.yaml"), "--name", "x"]) == 1
    out = capsys.readouterr()
    assert main(["keys", "add", "--file", str(tmp_path / "no" / "dir.yaml"), "--name", "x"]) == 1
    out = capsys.readouterr()
    assert "No such file" in out.err
    assert out.out == ""  # no key printed for a key that was not stored


def test_add_through_a_symlink_keeps_the_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = write_keys(tmp_path / "real.yaml", entry("dev", DEV_KEY))
    link = tmp_path / "keys.yaml"
    link.symlink_to(real.name)
    assert main(["keys", "add", "--file", str(link), "--name", "ops"]) == 0
    assert link.is_symlink()
    assert os.readlink(link) == "real.yaml"
    assert len(KeyStore.load(real)) == 2
    capsys.readouterr()
