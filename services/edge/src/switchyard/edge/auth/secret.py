"""The keys in a Kubernetes Secret, read, watched and written through the API server.

A mounted Secret reaches a pod only after the kubelet's sync (a minute or more) and cannot
be written; through the API server every replica sees a change within seconds and the
admin API can write it. The document is the keys file's (`keysfile.parse_document`), under
one key of the Secret's data.

- Watch: list then watch that one Secret (fieldSelector metadata.name, so RBAC can name
  it in resourceNames), from the list's resourceVersion; the API server ends a watch after
  `watch_s` and lightkube resumes it from the last version; on any error (410 Gone: the
  version is too old) list again, after a bounded, doubling wait.
- Write: read (with its resourceVersion), change, validate, replace (PUT) with that
  version; 409 Conflict (another replica wrote first) reads again, a bounded number of
  times: the cross-replica equivalent of the keys file's lock.

Permissions: get, list, watch and update on that Secret. Logs and errors name the Secret,
never its data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Collection
from typing import TYPE_CHECKING

import httpx2
import structlog
from lightkube import ApiError, AsyncClient
from lightkube.core.client import FieldSelector
from lightkube.resources.core_v1 import Secret

from switchyard.edge.auth.keysfile import KeysDocument, KeysFileError, parse_document, render_keys
from switchyard.edge.auth.source import Change, KeysSourceError
from switchyard.edge.auth.store import KeyStore

if TYPE_CHECKING:
    from switchyard.edge.settings import EdgeSettings

log = structlog.get_logger(__name__)

#: What the edge does to its keys Secret, all of it (the chart's Role grants exactly these
#: on that one Secret; tests/edge/auth/test_secret_rbac.py checks both ways).
VERBS = ("get", "list", "watch", "update")
#: How many times a write reads again after another writer changed the Secret first.
WRITE_ATTEMPTS = 8
#: The longest wait between two watches of a failing API server.
RETRY_MAX_S = 10.0
_ERRORS = (httpx2.HTTPError, OSError)  # lightkube's ApiError is an httpx2.HTTPStatusError


class SecretKeys:
    def __init__(
        self,
        client: AsyncClient,
        name: str,
        *,
        namespace: str | None = None,
        key: str = "keys.yaml",
        classes: Collection[str] | None = None,
        watch_s: int = 300,
        retry_s: float = 0.5,
    ) -> None:
        self._client = client
        self.name = name
        self.namespace = namespace or client.namespace
        self.key = key
        self._classes = classes
        self._watch_s = watch_s
        self._retry_s = retry_s

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> SecretKeys:
        assert settings.keys_secret is not None
        return cls(
            # In-cluster service account, or $KUBECONFIG elsewhere.
            AsyncClient(field_manager="switchyard-edge"),
            settings.keys_secret,
            namespace=settings.keys_secret_namespace,
            key=settings.keys_secret_key,
            classes=settings.priority_classes,
            watch_s=settings.keys_secret_watch_s,
            retry_s=settings.keys_secret_retry_s,
        )

    @property
    def ref(self) -> str:
        """namespace/name, for logs."""
        return f"{self.namespace}/{self.name}"

    @property
    def where(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    async def open(self) -> KeyStore:
        """A key store with the Secret's keys, kept current by its `watch`; raises
        KeysSourceError (which says what is wrong) when the Secret cannot be read or is invalid."""
        secret = await self._get()
        store = KeyStore.of_document(self._document(secret), self, _version(secret))
        log.info("api_keys_loaded", secret=self.ref, keys=len(store))
        return store

    # -- KeysSource -----------------------------------------------------------------------

    async def read(self) -> KeysDocument:
        return self._document(await self._get())

    async def update(self, change: Change) -> KeysDocument:
        for attempt in range(WRITE_ATTEMPTS):
            secret = await self._get()
            changed = change(self._document(secret))
            text = render_keys(changed.keys, changed.tenants)
            written = self._parse(text)  # never store a document the edge would refuse
            secret.data = {**(secret.data or {}), self.key: _encode(text)}
            try:
                # PUT with the resourceVersion read: refused (409) if anyone wrote since.
                await self._client.replace(secret)
            except ApiError as exc:
                if exc.status.code != 409:
                    raise self._unavailable(exc, "update") from None
                log.info("api_keys_secret_conflict", secret=self.ref, attempt=attempt + 1)
                # Apart a little, so that the writers that met do not meet again.
                await asyncio.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                continue
            except _ERRORS as exc:
                raise self._unavailable(exc, "update") from None
            return written
        raise KeysSourceError(
            503,
            "keys_secret_conflict",
            f"The {self.where} kept changing under this write ({WRITE_ATTEMPTS} attempts): "
            "nothing was written; try again.",
        )

    async def refresh(self, store: KeyStore) -> bool:
        try:
            secret = await self._get()
            document = self._document(secret)
        except KeysSourceError as exc:
            # The watch keeps trying; the keys in force stay (as for a bad keys file).
            log.error("api_keys_reload_failed", secret=self.ref, error=str(exc))
            return False
        return await asyncio.to_thread(store.use, document, _version(secret))

    async def follow(self, store: KeyStore, interval_s: float) -> None:
        """List, then watch, the Secret until cancelled (`interval_s`, the file's poll, is
        not used: the watch delivers each change as it is made)."""
        failures = 0
        fields: FieldSelector = {"metadata.name": self.name}
        while True:
            try:
                listing = self._client.list(Secret, namespace=self.namespace, fields=fields)
                found = [secret async for secret in listing]
                await self._apply(store, found[0] if found else None)
                async for op, secret in self._client.watch(
                    Secret,
                    namespace=self.namespace,
                    fields=fields,
                    resource_version=listing.resourceVersion,
                    server_timeout=self._watch_s,
                ):
                    await self._apply(store, None if op == "DELETED" else secret)
                    failures = 0  # a watch that delivers: the next failure is a new one
            except Exception as exc:  # the API server's, the network's, or a bug: watch again
                if isinstance(exc, ApiError) and exc.status.code == 410 and failures == 0:
                    # Gone: the version is too old (compacted). Expected; list again at once.
                    log.info("api_keys_secret_watch_expired", secret=self.ref)
                    failures = 1
                    continue
                delay = min(self._retry_s * 2 ** min(failures, 10), max(RETRY_MAX_S, self._retry_s))
                failures += 1
                log.warning(
                    "api_keys_secret_watch_failed",
                    secret=self.ref,
                    error=_describe(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._client.close()

    # -- the Secret -----------------------------------------------------------------------

    async def _get(self) -> Secret:
        try:
            secret: Secret = await self._client.get(Secret, self.name, namespace=self.namespace)
        except _ERRORS as exc:
            raise self._unavailable(exc, "get") from None
        return secret

    async def _apply(self, store: KeyStore, secret: Secret | None) -> None:
        if secret is None:
            log.error("api_keys_secret_missing", secret=self.ref, kept_keys=len(store))
            return
        try:
            document = self._document(secret)
        except KeysSourceError as exc:
            log.error(
                "api_keys_reload_failed", secret=self.ref, error=str(exc), kept_keys=len(store)
            )
            return
        await asyncio.to_thread(store.use, document, _version(secret))

    def _document(self, secret: Secret) -> KeysDocument:
        raw = (secret.data or {}).get(self.key)
        if raw is None:
            raise KeysSourceError(
                409, "keys_secret_invalid", f"The {self.where} has no '{self.key}' in its data."
            )
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise KeysSourceError(
                409, "keys_secret_invalid", f"The {self.where}'s '{self.key}' is not UTF-8 text."
            ) from None
        return self._parse(text)

    def _parse(self, text: str) -> KeysDocument:
        try:
            return parse_document(text, self.where, self._classes)
        except KeysFileError as exc:  # its problems never echo a hash or a key
            message = f"{exc} (fix the Secret first)"
            raise KeysSourceError(409, "keys_secret_invalid", message) from None

    def _unavailable(self, exc: Exception, verb: str) -> KeysSourceError:
        if isinstance(exc, ApiError) and exc.status.code == 404:
            return KeysSourceError(503, "keys_secret_missing", f"The {self.where} does not exist.")
        if isinstance(exc, ApiError) and exc.status.code == 403:
            return KeysSourceError(
                503,
                "keys_secret_forbidden",
                f"The edge may not {verb} the {self.where} (its Role grants get, list, watch "
                "and update on it).",
            )
        return KeysSourceError(
            503,
            "keys_secret_unavailable",
            f"The Kubernetes API server did not {verb} the {self.where}: {_describe(exc)}.",
        )


def _version(secret: Secret) -> str | None:
    return secret.metadata.resourceVersion if secret.metadata is not None else None


def _encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _describe(exc: Exception) -> str:
    """What went wrong, without the API server's message (it may quote the object)."""
    if isinstance(exc, ApiError):
        return f"{exc.status.code} {exc.status.reason or ''}".strip()
    return type(exc).__name__
