"""Where responses are kept: what a stored response is, and the interface of its stores.

A response belongs to its tenant: every read and write names the tenant, and a store
keeps tenants apart (another tenant's id is not found, never refused: its existence is
not told). Two stores implement `ResponseStore`: one in this process's memory (bounded;
one edge process), and one in Redis, shared by every edge replica, where background jobs
also live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ResponseTooLarge(Exception):
    """The response (with its conversation) is over the store's size limit per response."""


@dataclass(slots=True)
class StoredResponse:
    id: str
    tenant: str
    #: The name of the key that created it (background jobs run under that key's limits).
    key_name: str
    #: The Response object exactly as `GET /v1/responses/{id}` answers it.
    response: dict[str, Any]
    #: This response's own input items as `input_items.list` lists them (each with its id),
    #: in the order given.
    input_items: list[dict[str, Any]] = field(default_factory=list)
    #: Every item the model read for this response, in order: the chain of
    #: `previous_response_id` (inputs and outputs), then this response's input. A later
    #: response that names this one reads `context + response["output"]` first.
    context: list[dict[str, Any]] = field(default_factory=list)
    #: A background response's create request (its JSON body), kept until it has run.
    request: bytes | None = None


class ResponseStore(Protocol):
    async def start(self) -> None:
        """Connect (Redis): before the edge answers its first request."""
        ...

    async def put(self, stored: StoredResponse) -> None:
        """Keep `stored` (replacing what was kept under its tenant and id), for the store's
        time to live. `ResponseTooLarge` when over the size limit; nothing is kept then."""
        ...

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The tenant's response, or None: unknown, expired, deleted, or another tenant's."""
        ...

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Forget the tenant's response; whether there was one."""
        ...

    async def close(self) -> None: ...
