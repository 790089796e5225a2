"""The key store the edge authenticates against, kept current from its source (the keys file,
reloaded when it changes, or a Kubernetes Secret watched through the API server: `source`).

Reloads run in a worker thread (`watch`) while `authenticate` runs on the event loop: a
reload builds a whole new table and swaps one attribute, so a request sees either the old
keys or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from switchyard.edge.auth.keys import MAX_KEY_LENGTH, ApiKey, hash_key
from switchyard.edge.auth.keysfile import (
    Budget,
    FileStamp,
    KeyEntry,
    KeysDocument,
    KeysFileError,
    read_keys_document,
)
from switchyard.edge.auth.source import FileKeys, KeysSource

if TYPE_CHECKING:
    from switchyard.edge.auth.changes import KeyChanges

log = structlog.get_logger(__name__)


class KeyStore:
    def __init__(
        self,
        by_digest: Mapping[str, ApiKey] | None = None,
        *,
        path: Path | None = None,
        stamp: FileStamp | None = None,
        classes: Collection[str] | None = None,
        source: KeysSource | None = None,
    ) -> None:
        """Prefer `load`, `of_document`, `empty` or `of`; `by_digest` maps lower-case hex
        SHA-256 to its key."""
        self._table = _table(by_digest or {})
        #: The tenants' budgets from the same file, swapped with the table on reload.
        self._tenant_budgets: Mapping[str, Budget] = {}
        self._path = path
        self._stamp = stamp
        self._classes = classes  # the priority classes a key may name (None: any)
        self._reload_lock = threading.Lock()
        self._source = source
        #: The version of the document in force, for a source that has versions (a Secret's
        #: resourceVersion): the same version is not applied twice, an older one not at all.
        self._version: str | None = None
        #: Changes from other edge replicas (Redis pub/sub), listened to while `watch` runs.
        self.changes: KeyChanges | None = None

    @classmethod
    def load(cls, path: Path, classes: Collection[str] | None = None) -> KeyStore:
        """The keys in `path`, each key's priority one of `classes` when given; raises
        KeysFileError (which says what is wrong) for a bad file."""
        document, stamp = read_keys_document(path, classes)
        store = cls(
            _by_digest(document.keys),
            path=path,
            stamp=stamp,
            classes=classes,
            source=FileKeys(path, classes),
        )
        store._tenant_budgets = _tenant_budgets(document)
        log.info("api_keys_loaded", path=str(path), keys=len(store))
        return store

    @classmethod
    def of_document(
        cls, document: KeysDocument, source: KeysSource, version: str | None = None
    ) -> KeyStore:
        """The keys of `document`, read from `source` (not a file) at `version`."""
        store = cls(_by_digest(document.keys), source=source)
        store._tenant_budgets = _tenant_budgets(document)
        store._version = version
        return store

    @classmethod
    def empty(cls) -> KeyStore:
        """A store with no keys and no file: every request is refused."""
        return cls()

    @classmethod
    def of(cls, keys: Mapping[str, ApiKey]) -> KeyStore:
        """An in-memory store from plain keys (tests, `make run` without a file); no file to watch."""
        return cls({hash_key(k): v for k, v in keys.items()})

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def source(self) -> KeysSource | None:
        """Where the keys are read and written (None: in-memory keys, nothing to change)."""
        return self._source

    @property
    def tenant_budgets(self) -> Mapping[str, Budget]:
        """Each tenant's budget (`tenants:` in the keys file), for tenants that have one."""
        return self._tenant_budgets

    def __iter__(self) -> Iterator[ApiKey]:
        return iter([key for _, key in self._table.values()])  # a snapshot: reloads swap the table

    def __len__(self) -> int:
        return len(self._table)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key presented in an `Authorization` header value ("Bearer <key>", scheme in any
        case, surrounding and separating whitespace ignored); None if missing, malformed or unknown."""
        if not authorization:
            return None
        parts = authorization.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return None
        return self.authenticate_key(parts[1])

    def authenticate_key(self, secret: str) -> ApiKey | None:
        """The key for a bare secret (Anthropic's `x-api-key` header); None if unknown."""
        if not secret or len(secret) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        found = self._table.get(digest)
        if found is None:
            return None
        stored, key = found
        # The dict lookup already matched; compare_digest keeps the final check constant-time
        # should the table ever be keyed by something other than the full digest.
        return key if hmac.compare_digest(stored, digest) else None

    def by_name(self, name: str) -> ApiKey | None:
        """The key named `name` in the current keys (a background job runs under the key
        that created it, looked up again when it runs: a key revoked since is None)."""
        # A scan: jobs look keys up once per run, never per request or token.
        return next((key for _, key in self._table.values() if key.name == name), None)

    def drop(self, name: str) -> bool:
        """Stop accepting the key named `name` now (a revocation, before the file may show
        it); True if it was there. Blocking (the reload lock): call it off the event loop.
        Under the lock, so a reload that read the file before the revocation cannot swap
        the key back in after it."""
        with self._reload_lock:
            table = {d: v for d, v in self._table.items() if v[1].name != name}
            if len(table) == len(self._table):
                return False
            self._table = table
        log.info("api_key_revoked", key=name)
        return True

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed (inode, mtime or size); True if new keys were loaded.

        An invalid or unreadable new file is logged and the current keys stay in force: a bad
        edit must not lock every client out.
        """
        if self._path is None:
            return False
        with self._reload_lock:
            try:
                current = FileStamp.of(os.stat(self._path))
            except OSError as exc:
                # During a Secret update the path always resolves (the swap is one rename), so a
                # missing file is a real problem; log it once per stamp, not every poll.
                if self._stamp is not None:
                    log.error("api_keys_file_unreadable", path=str(self._path), error=exc.strerror)
                    self._stamp = None
                return False
            if current == self._stamp:
                return False
            try:
                document, stamp = read_keys_document(self._path, self._classes)
            except KeysFileError as exc:
                log.error(
                    "api_keys_reload_failed",
                    path=str(self._path),
                    error=str(exc),
                    kept_keys=len(self._table),
                )
                # Remember the bad version so it is reported once, not on every poll.
                self._stamp = current
                return False
            self._table = _table(_by_digest(document.keys))
            self._tenant_budgets = _tenant_budgets(document)
            self._stamp = stamp
        log.info("api_keys_reloaded", path=str(self._path), keys=len(self))
        return True

    def use(self, document: KeysDocument, version: str | None) -> bool:
        """Put the keys of `document` (a source's at `version`) in force unless this version
        or a later one already is; True if they were. Blocking (the reload lock), like `drop`."""
        with self._reload_lock:
            if not _newer(version, self._version):
                return False
            self._table = _table(_by_digest(document.keys))
            self._tenant_budgets = _tenant_budgets(document)
            self._version = version
        log.info("api_keys_reloaded", keys=len(self))
        return True

    async def refresh(self) -> bool:
        """Re-read the source now (after a change was announced); True if new keys were loaded."""
        if self._source is None:
            return False
        return await self._source.refresh(self)

    async def watch(self, interval_s: float = 2.0) -> None:
        """Keep the keys current from the source until cancelled (a file: polled every
        `interval_s` seconds; a Secret: watched); returns at once for a store with no source.
        With `changes`, other replicas' changes are also applied as they are announced."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        source = self._source
        if source is None:
            return
        changes = self.changes
        listener = asyncio.create_task(changes.listen(self)) if changes is not None else None
        try:
            await source.follow(self, interval_s)
        finally:
            if listener is not None and changes is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                await changes.close()
            await source.close()  # the watch lasts as long as the process


def _newer(version: str | None, current: str | None) -> bool:
    if version is None or current is None:
        return True  # a source without versions: every read is applied
    if version == current:
        return False
    # The API server's resourceVersions are opaque, but its own are etcd revisions (integers
    # that only grow): a read that raced a newer watch event must not put older keys back.
    if version.isdigit() and current.isdigit():
        return int(version) > int(current)
    return True


def _tenant_budgets(document: KeysDocument) -> dict[str, Budget]:
    return {n: t.budget for n, t in document.tenants.items() if t.budget is not None}


def _by_digest(entries: Iterable[KeyEntry]) -> dict[str, ApiKey]:
    # A disabled key is left out: it authenticates as unknown (401), like a deleted one.
    return {e.sha256: e.api_key() for e in entries if not e.disabled}


def _table(by_digest: Mapping[str, ApiKey]) -> Mapping[str, tuple[str, ApiKey]]:
    # The digest is kept next to its key for the compare_digest in `authenticate`;
    # lower-cased because that is what hexdigest() produces.
    return {d.lower(): (d.lower(), key) for d, key in by_digest.items()}
