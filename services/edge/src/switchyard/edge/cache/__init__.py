"""The response cache: answers to deterministic requests, kept to answer their repeats.

What may be cached is decided by the request (`cacheable`): embeddings always; chat and
completions only when their answer is determined — greedy (`temperature` 0, or `top_k` 1)
or seeded — with one choice. The key (`cache_key`) covers the tenant (entries are never
shared across tenants), the route, the identity of the weights serving it (a new model
version never answers from an old one's entries), the API and whether it streams, and the
whole canonical request but its id.

A store (`ResponseCache`) keeps opaque bytes under a key. It never fails a request: an
unreachable or slow store is a miss (`get`) or a skipped write (`put`), counted in
`switchyard_edge_cache_errors`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from switchyard.inference.v1 import inference_pb2 as pb

#: Bumped when what an entry holds changes shape: old entries are then never read.
ENTRY_VERSION = 1


class _Canonical(Protocol):
    request_id: str

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CacheKey:
    """The hex SHA-256 naming one entry (the store adds its own prefix)."""

    digest: str


def cache_key(
    *, tenant: str, route: str, identity: str, api: str, stream: bool, request: _Canonical
) -> CacheKey:
    """The key of `request`'s answer (its id is left out: every request has its own)."""
    request_id, request.request_id = request.request_id, ""
    try:
        canonical = request.SerializeToString(deterministic=True)
    finally:
        request.request_id = request_id
    h = hashlib.sha256()
    for part in (str(ENTRY_VERSION), tenant, route, identity, api, "stream" if stream else "whole"):
        encoded = part.encode()
        h.update(len(encoded).to_bytes(4, "little"))  # length-prefixed: no two tuples collide
        h.update(encoded)
    h.update(canonical)
    return CacheKey(h.hexdigest())


def cacheable(request: pb.GenerateRequest) -> bool:
    """Whether a generation's answer is determined by the request: one choice, and greedy
    or seeded sampling (an unset temperature is the engine's default, which samples)."""
    if request.n > 1:
        return False
    sampling = request.sampling
    greedy = (sampling.HasField("temperature") and sampling.temperature == 0) or (
        sampling.HasField("top_k") and sampling.top_k == 1
    )
    return greedy or sampling.HasField("seed")


class ResponseCache(ABC):
    """A store of entries. Implementations never raise from `get` or `put`."""

    #: False only for `NoCache`: callers then skip building keys at all.
    enabled: bool = True

    @abstractmethod
    async def get(self, key: CacheKey) -> bytes | None:
        """The entry, or None (absent, expired, or the store unavailable)."""

    @abstractmethod
    async def put(self, key: CacheKey, value: bytes) -> None:
        """Keep `value` (skipped when larger than the store's entry limit, or on failure)."""

    async def start(self) -> None:  # noqa: B027
        """Before the first request (connections, scripts)."""

    async def aclose(self) -> None:  # noqa: B027
        """At shutdown."""


class NoCache(ResponseCache):
    """The cache turned off: nothing is kept, nothing is found."""

    enabled = False

    async def get(self, key: CacheKey) -> bytes | None:
        return None

    async def put(self, key: CacheKey, value: bytes) -> None:
        return None
