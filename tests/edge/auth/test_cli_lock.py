"""The keys CLI's file lock: concurrent writers never lose each other's entries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from switchyard.edge.auth.keysfile import read_keys_document
from switchyard.edge.auth.writer import lock_path, locked
from tests.support.polling import eventually_sync

from .support import DEV_KEY, entry, write_keys

WRITERS = 4


def _holds_open(pid: int, lock: Path) -> bool:
    """Whether process `pid` has `lock` open: it has reached the lock (and waits on it, as
    the test holds it), so it reads the keys file only once it has the lock."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(lock) for fd in fds.iterdir())
    except OSError:  # a descriptor closed meanwhile: ask again
        return False


def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.yaml",
        entry("dev", DEV_KEY, tenant="team-a"),
    )
    path.write_text(
        path.read_text() + 'tenants:\n  team-a:\n    budget: {tokens: 1000, period: "day"}\n'
    )
    names = [f"w{i}" for i in range(WRITERS)]
    # The test holds the lock until every writer waits on it: all of them read the file
    # only after the one before has written it, or an entry would be lost.
    with locked(path):
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "switchyard.edge.auth",
                    "keys",
                    "add",
                    "--file",
                    str(path),
                    "--name",
                    name,
                    "--tenant",
                    "team-a",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]
        try:
            eventually_sync(
                lambda: all(_holds_open(w.pid, lock_path(path)) for w in writers),
                within_s=60,
                what=f"{WRITERS} writers waiting on the lock",
            )
        except BaseException:
            for writer in writers:
                writer.kill()
                writer.wait()
            raise
    results = [writer.communicate(timeout=60) for writer in writers]
    assert [w.returncode for w in writers] == [0] * WRITERS, results
    document, _ = read_keys_document(path)
    assert sorted(e.name for e in document.keys) == ["dev", *names]
    # The tenants section survives the CLI's rewrites.
    assert document.tenants["team-a"].budget is not None
