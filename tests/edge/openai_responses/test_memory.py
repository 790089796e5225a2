"""The Responses store in memory: tenants apart, a time to live (an injected clock), the
least recently used out past its bound, a size limit per response, copies out."""

from __future__ import annotations

import pytest

from switchyard.edge.openai_responses.memory import MemoryResponseStore
from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stored(response_id: str, tenant: str = "t", text: str = "hi") -> StoredResponse:
    return StoredResponse(
        response_id,
        tenant,
        "key",
        {"id": response_id, "object": "response", "output": [{"text": text}]},
        input_items=[{"id": "msg_1", "type": "message"}],
        context=[{"id": "msg_1", "type": "message"}],
        request=b'{"model": "m"}',
    )


def _store(clock: Clock, max_entries: int = 10, max_bytes: int = 4096) -> MemoryResponseStore:
    return MemoryResponseStore(
        max_entries=max_entries, ttl_s=60.0, max_bytes=max_bytes, clock=clock
    )


async def test_kept_per_tenant_and_given_back_as_a_copy() -> None:
    store = _store(Clock())
    await store.put(_stored("resp_1"))
    got = await store.get("t", "resp_1")
    assert got == _stored("resp_1")
    assert await store.get("other", "resp_1") is None  # another tenant's: not found
    assert got is not None
    got.response["output"].clear()  # the caller's copy, not the store's
    assert await store.get("t", "resp_1") == _stored("resp_1")
    assert not await store.delete("other", "resp_1")
    assert await store.delete("t", "resp_1")
    assert await store.get("t", "resp_1") is None
    assert not await store.delete("t", "resp_1")


async def test_a_response_lives_for_the_ttl() -> None:
    clock = Clock()
    store = _store(clock)
    await store.put(_stored("resp_1"))
    clock.now += 59.9
    assert await store.get("t", "resp_1") is not None
    clock.now += 0.1
    assert await store.get("t", "resp_1") is None
    assert len(store) == 0  # an expired response read is gone
    await store.put(_stored("resp_2"))
    clock.now += 60
    assert not await store.delete("t", "resp_2")  # expired: there was none to delete


async def test_the_least_recently_used_goes_past_the_bound() -> None:
    store = _store(Clock(), max_entries=2)
    await store.put(_stored("resp_1"))
    await store.put(_stored("resp_2"))
    assert await store.get("t", "resp_1") is not None  # now the most recently used
    await store.put(_stored("resp_3"))
    assert len(store) == 2
    assert await store.get("t", "resp_2") is None
    assert await store.get("t", "resp_1") is not None
    assert await store.get("t", "resp_3") is not None


async def test_a_response_over_the_size_limit_is_refused_and_not_kept() -> None:
    store = _store(Clock(), max_bytes=1024)
    with pytest.raises(ResponseTooLarge, match="1024 bytes"):
        await store.put(_stored("resp_1", text="x" * 2000))
    assert await store.get("t", "resp_1") is None
    await store.put(_stored("resp_1"))
    assert await store.get("t", "resp_1") is not None
