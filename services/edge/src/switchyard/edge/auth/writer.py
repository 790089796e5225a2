"""Changing the keys file: read, change, validate and replace it under one exclusive lock.

The CLI and the edge's admin API both write through here, so two writers (two `keys add`
processes, an admin call and a CLI run, two admin calls) never read the same version and
lose each other's entry. The lock is `flock` on a lock file beside the keys file (not the
keys file itself: it is replaced by a rename, and a lock on the old inode would guard
nothing). The new text is parsed again before it is written: the file is never invalid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from switchyard.edge.auth.atomic import write_atomic
from switchyard.edge.auth.keysfile import (
    KeysDocument,
    parse_document,
    read_keys_document,
    render_keys,
)

#: How long a writer waits for another to finish; a write takes milliseconds.
LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.01


class KeysFileBusy(Exception):
    """Another writer held the lock for longer than the timeout."""


def lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def locked(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the exclusive lock of the keys file at `path` (blocking: call it off the event
    loop). Raises KeysFileBusy after `timeout_s`, OSError if the lock file cannot be made
    (a read-only directory such as a mounted Secret)."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KeysFileBusy(
                        f"keys file {path}: another writer held its lock for {timeout_s:g}s"
                    ) from None
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_keys_file(
    path: Path,
    change: Callable[[KeysDocument], KeysDocument],
    classes: Collection[str] | None = None,
    *,
    missing_ok: bool = False,
    timeout_s: float = LOCK_TIMEOUT_S,
) -> KeysDocument:
    """Apply `change` to the file's document under the lock and write the result; returns
    the document as written. Whatever `change` raises propagates with nothing written; so
    does KeysFileError for a result that would not be a valid file. `missing_ok`: a missing
    file is an empty document (the CLI's first `keys add`)."""
    with locked(path, timeout_s):
        if missing_ok and not path.exists():
            document = KeysDocument(keys=[])
        else:
            document, _ = read_keys_document(path, classes)
        changed = change(document)
        text = render_keys(changed.keys, changed.tenants)
        written = parse_document(text, path, classes)  # never write a file the edge would refuse
        write_atomic(path, text)
    return written
