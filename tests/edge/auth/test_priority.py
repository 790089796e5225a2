"""A key's `priority`: its admission class, checked against the edge's classes when loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from switchyard.edge.auth import KeysFileError, KeyStore, main
from switchyard.edge.auth.keysfile import parse_keys, read_keys_file, render_keys

from .support import DEV_KEY, OPS_KEY, entry, keys_yaml, write_keys

CLASSES = ("interactive", "standard", "batch")


def test_a_keys_priority_loads_and_an_unset_one_is_none(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.yaml",
        entry("dev", DEV_KEY, extra="    priority: interactive\n"),
        entry("ops", OPS_KEY),
    )
    store = KeyStore.load(path, CLASSES)
    dev, ops = store.authenticate_key(DEV_KEY), store.authenticate_key(OPS_KEY)
    assert dev is not None
    assert ops is not None
    assert (dev.priority, ops.priority) == ("interactive", None)


def test_an_unknown_class_is_a_clear_error_at_load(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.yaml",
        entry("dev", DEV_KEY),
        entry("ops", OPS_KEY, extra="    priority: urgent\n"),
    )
    with pytest.raises(KeysFileError) as caught:
        KeyStore.load(path, CLASSES)
    assert caught.value.problems == (
        "keys[1] (name 'ops').priority: unknown priority class 'urgent' (the edge's classes, "
        "EDGE_PRIORITY_CLASSES: interactive, standard, batch)",
    )
    # The file's own schema knows no classes: only an edge's settings do.
    assert read_keys_file(path)[0][1].priority == "urgent"


def test_a_priority_is_a_name(tmp_path: Path) -> None:
    text = keys_yaml(entry("dev", DEV_KEY, extra="    priority: 3\n"))
    with pytest.raises(KeysFileError) as caught:
        parse_keys(text, classes=CLASSES)
    assert caught.value.problems[0].startswith("keys[0] (name 'dev').priority: must be a string")


def test_a_reload_naming_an_unknown_class_keeps_the_old_keys(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY, extra="    priority: batch\n"))
    store = KeyStore.load(path, CLASSES)
    write_keys(path, entry("dev", DEV_KEY, extra="    priority: gold\n"), entry("ops", OPS_KEY))
    with capture_logs() as logs:
        assert store.reload_if_changed() is False
    assert "unknown priority class 'gold'" in logs[0]["error"]
    assert store.authenticate_key(OPS_KEY) is None
    key = store.authenticate_key(DEV_KEY)
    assert key is not None
    assert key.priority == "batch"


def test_render_keeps_the_priority() -> None:
    text = keys_yaml(entry("dev", DEV_KEY, extra="    priority: batch\n"), entry("ops", OPS_KEY))
    entries = parse_keys(text)
    rendered = render_keys(entries)
    assert "    priority: batch\n" in rendered
    assert rendered.count("priority") == 1
    assert parse_keys(rendered) == entries


def test_cli_add_takes_a_known_priority_and_refuses_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_PRIORITY_CLASSES", raising=False)
    path = tmp_path / "keys.yaml"
    assert main(["add", "--file", str(path), "--name", "dev", "--priority", "batch"]) == 0
    assert main(["add", "--file", str(path), "--name", "ops", "--priority", "gold"]) == 2
    assert "unknown priority class 'gold'" in capsys.readouterr().err
    assert [(e.name, e.priority) for e in read_keys_file(path)[0]] == [("dev", "batch")]
    assert main(["list", "--file", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[6] == "batch"
    # The edge's classes as its environment sets them.
    monkeypatch.setenv("EDGE_PRIORITY_CLASSES", "gold,silver")
    assert main(["add", "--file", str(path), "--name", "ops", "--priority", "gold"]) == 2
    assert "unknown priority class 'batch'" in capsys.readouterr().err  # dev's, in the file
