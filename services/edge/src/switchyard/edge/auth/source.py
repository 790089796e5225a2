"""Where the keys live: the one interface the key store's watch and the admin API go through.

Two sources implement it: the keys file (`FileKeys`, here) and a Kubernetes Secret read and
written through the API server (`auth.secret.SecretKeys`). Each reads the whole document,
applies a change to it as one atomic step (a file lock, or the Secret's resourceVersion),
and keeps a `KeyStore` current (file polls, or a watch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from switchyard.edge.auth.keysfile import KeysDocument, KeysFileError, read_keys_document
from switchyard.edge.auth.writer import KeysFileBusy, update_keys_file

if TYPE_CHECKING:
    from switchyard.edge.auth.store import KeyStore

log = structlog.get_logger(__name__)

Change = Callable[[KeysDocument], KeysDocument]


class KeysSourceError(Exception):
    """The source could not be read or written; `status` and `code` are what the admin API
    answers with. The message never carries a key, a hash or the source's data."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class KeysSource(Protocol):
    async def read(self) -> KeysDocument:
        """The document as stored now; raises KeysSourceError."""
        ...

    async def update(self, change: Change) -> KeysDocument:
        """Apply `change` to the stored document and store the result, atomically against
        other writers; returns it as stored. What `change` raises propagates with nothing
        written; KeysSourceError when the source cannot be read or written."""
        ...

    async def refresh(self, store: KeyStore) -> bool:
        """Give `store` the stored document now if it changed; True if it did."""
        ...

    async def follow(self, store: KeyStore, interval_s: float) -> None:
        """Keep `store` current until cancelled (`interval_s`: the file's poll interval)."""
        ...

    async def close(self) -> None: ...


class FileKeys:
    """The keys file: read and changed under its lock (`auth.writer`), polled for changes."""

    def __init__(self, path: Path, classes: Collection[str] | None = None) -> None:
        self.path = path
        self._classes = classes

    async def read(self) -> KeysDocument:
        try:
            document, _ = await asyncio.to_thread(read_keys_document, self.path, self._classes)
        except KeysFileError as exc:
            raise _file_error(exc) from None
        return document

    async def update(self, change: Change) -> KeysDocument:
        try:
            return await asyncio.to_thread(update_keys_file, self.path, change, self._classes)
        except KeysFileError as exc:  # the file as it is now
            raise _file_error(exc) from None
        except KeysFileBusy as exc:
            raise KeysSourceError(503, "keys_file_busy", str(exc)) from None
        except OSError as exc:
            # A read-only keys file or directory (a mounted Secret): say so, change nothing.
            raise KeysSourceError(
                503,
                "keys_file_read_only",
                f"The keys file cannot be written ({exc.strerror or exc}): the admin API needs "
                "a writable keys file and directory (in a cluster: EDGE_KEYS_SECRET).",
            ) from None

    async def refresh(self, store: KeyStore) -> bool:
        return await asyncio.to_thread(store.reload_if_changed)

    async def follow(self, store: KeyStore, interval_s: float) -> None:
        # Polling (not inotify): a mounted Secret's update swaps a symlink in the directory
        # above the file, which inotify on the file itself does not report.
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh(store)
            except Exception:
                # A bug in one poll must not stop key rotation for the life of the process.
                log.exception("api_keys_watch_failed", path=str(self.path))

    async def close(self) -> None:
        return None


def _file_error(exc: KeysFileError) -> KeysSourceError:
    if exc.io_error:
        return KeysSourceError(503, "keys_file_unreadable", str(exc))
    return KeysSourceError(409, "keys_file_invalid", f"{exc} (fix the file first)")
