"""Reloading: edits, bad edits, Kubernetes Secret updates, and the background watcher."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from switchyard.edge.auth import KeyStore, hash_key
from tests.support.polling import eventually

from .support import DEV_KEY, OPS_KEY, entry, keys_yaml, write_keys


def _names(store: KeyStore) -> set[str]:
    return {k.name for k in store}


def test_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    store = KeyStore.load(write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY)))
    assert store.reload_if_changed() is False
    assert store.reload_if_changed() is False


def test_content_change_is_picked_up(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    store = KeyStore.load(path)
    write_keys(path, entry("ops", OPS_KEY), entry("dev", DEV_KEY, extra="    rpm: 5\n"))
    assert store.reload_if_changed() is True
    assert _names(store) == {"dev", "ops"}
    dev = store.authenticate(f"Bearer {DEV_KEY}")
    assert dev is not None
    assert dev.rpm == 5
    assert store.reload_if_changed() is False


def test_same_size_edit_is_picked_up_by_mtime(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    store = KeyStore.load(path)
    write_keys(path, entry("dev", OPS_KEY))  # same length, same inode
    st = path.stat()
    # File timestamps come from a coarse clock; make the edit's mtime visibly later.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.reload_if_changed() is True
    assert store.authenticate(f"Bearer {OPS_KEY}") is not None
    assert store.authenticate(f"Bearer {DEV_KEY}") is None


def test_removed_key_stops_working(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY), entry("ops", OPS_KEY))
    store = KeyStore.load(path)
    write_keys(path, entry("ops", OPS_KEY))
    assert store.reload_if_changed() is True
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    assert len(store) == 1


def test_invalid_new_file_keeps_the_old_keys_and_is_logged_once(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    store = KeyStore.load(path)
    path.write_text(keys_yaml(entry("dev", DEV_KEY, extra="    rpm: 0\n"), entry("ops", OPS_KEY)))
    with capture_logs() as logs:
        assert store.reload_if_changed() is False
        assert store.reload_if_changed() is False  # same bad file: not reported again
    assert store.authenticate(f"Bearer {DEV_KEY}") is not None
    assert store.authenticate(f"Bearer {OPS_KEY}") is None
    assert [log["event"] for log in logs] == ["api_keys_reload_failed"]
    assert logs[0]["log_level"] == "error"
    assert "keys[0] (name 'dev').rpm" in logs[0]["error"]
    assert logs[0]["kept_keys"] == 1
    assert hash_key(DEV_KEY) not in repr(logs)
    assert hash_key(OPS_KEY) not in repr(logs)

    write_keys(path, entry("ops", OPS_KEY), entry("dev", DEV_KEY))  # the fix
    assert store.reload_if_changed() is True
    assert store.authenticate(f"Bearer {OPS_KEY}") is not None


def test_deleted_file_keeps_the_old_keys(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    store = KeyStore.load(path)
    path.unlink()
    with capture_logs() as logs:
        assert store.reload_if_changed() is False
        assert store.reload_if_changed() is False
    assert [log["event"] for log in logs] == ["api_keys_file_unreadable"]
    assert store.authenticate(f"Bearer {DEV_KEY}") is not None
    write_keys(path, entry("ops", OPS_KEY))
    assert store.reload_if_changed() is True
    assert _names(store) == {"ops"}


def _secret_version(mount: Path, version: str, text: str) -> None:
    """Publish `text` the way the kubelet updates a mounted Secret: write a new timestamped
    directory, then atomically swap the `..data` symlink to it and delete the old one."""
    new_dir = mount / f"..{version}"
    new_dir.mkdir()
    (new_dir / "keys.yaml").write_text(text)
    data = mount / "..data"
    old_target = os.readlink(data) if data.is_symlink() else None
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(new_dir.name)
    os.replace(tmp_link, data)
    if not (mount / "keys.yaml").is_symlink():
        (mount / "keys.yaml").symlink_to("..data/keys.yaml")
    if old_target is not None:
        for f in (mount / old_target).iterdir():
            f.unlink()
        (mount / old_target).rmdir()


def test_kubernetes_secret_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    mount = tmp_path / "secret"
    mount.mkdir()
    _secret_version(mount, "2026_01_01_00_00_00.1", keys_yaml(entry("dev", DEV_KEY)))
    path = mount / "keys.yaml"
    store = KeyStore.load(path)
    assert store.reload_if_changed() is False

    # Same size and, within the clock's resolution, maybe the same mtime: the inode differs.
    _secret_version(mount, "2026_01_01_00_00_01.2", keys_yaml(entry("dev", OPS_KEY)))
    assert store.reload_if_changed() is True
    assert store.authenticate(f"Bearer {OPS_KEY}") is not None
    assert store.authenticate(f"Bearer {DEV_KEY}") is None
    assert store.path == path
    assert store.reload_if_changed() is False


async def test_watch_reloads_a_changed_file_and_keeps_watching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY))
    store = KeyStore.load(path)
    polls = 0
    reload_if_changed = store.reload_if_changed

    def counted() -> bool:  # runs in the watcher's worker thread
        nonlocal polls
        polls += 1
        return reload_if_changed()

    monkeypatch.setattr(store, "reload_if_changed", counted)
    task = asyncio.create_task(store.watch(0.05))
    try:
        await eventually(lambda: polls >= 1, what="an idle poll first")
        write_keys(path, entry("dev", DEV_KEY), entry("ops", OPS_KEY))
        await eventually(lambda: store.authenticate(f"Bearer {OPS_KEY}"), what="the new key")
        assert not task.done()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watch_without_a_file_returns_and_rejects_bad_intervals(tmp_path: Path) -> None:
    await asyncio.wait_for(KeyStore.empty().watch(0.01), timeout=30)
    store = KeyStore.load(write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY)))
    with pytest.raises(ValueError, match="interval_s"):
        await store.watch(0)


async def test_watch_survives_a_failing_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore.load(write_keys(tmp_path / "keys.yaml", entry("dev", DEV_KEY)))
    loop = asyncio.get_running_loop()
    polled_after_failure = asyncio.Event()
    calls = 0

    def flaky() -> bool:  # runs in the watcher's worker thread
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        loop.call_soon_threadsafe(polled_after_failure.set)
        return False

    monkeypatch.setattr(store, "reload_if_changed", flaky)
    with capture_logs() as logs:
        task = asyncio.create_task(store.watch(0.01))
        await asyncio.wait_for(polled_after_failure.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert logs[0]["event"] == "api_keys_watch_failed"
