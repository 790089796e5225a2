"""The SSE reader handles every engine's framing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from switchyard.common.sse import ServerSentEvent, iter_events


async def _lines(lines: Iterable[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _events(lines: Iterable[str]) -> list[ServerSentEvent]:
    return [event async for event in iter_events(_lines(lines))]


async def test_data_with_and_without_space() -> None:
    events = await _events(['data: {"a":1}', "", 'data:{"b":2}', ""])
    assert [e.data for e in events] == ['{"a":1}', '{"b":2}']
    assert all(e.event == "message" for e in events)


async def test_only_one_leading_space_is_stripped() -> None:
    assert (await _events(["data:  two", ""]))[0].data == " two"


async def test_comments_and_unknown_fields_are_skipped() -> None:
    events = await _events([": keep-alive", "id: 7", "retry: 10", "data: x", ""])
    assert events == [ServerSentEvent("message", "x")]


async def test_named_events_and_multiline_data() -> None:
    events = await _events(["event: sglext_ids", "data: [1]", "", "data: a", "data: b", ""])
    assert events == [ServerSentEvent("sglext_ids", "[1]"), ServerSentEvent("message", "a\nb")]


async def test_last_event_without_blank_line_is_kept() -> None:
    # TGI's /generate_stream ends the body after its last event.
    assert (await _events(['data:{"end":true}']))[0].data == '{"end":true}'


async def test_blank_lines_alone_yield_nothing() -> None:
    assert await _events(["", "", ": ping", ""]) == []
