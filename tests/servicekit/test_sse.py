"""The SSE reader handles every engine's framing."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from switchyard.servicekit.sse import EventDecoder, LineTooLong, ServerSentEvent


async def _events(lines: Iterable[str]) -> list[ServerSentEvent]:
    """The events of a stream of `lines`, each fed as a chunk of its own."""
    decoder = EventDecoder()
    events = [e for line in lines for e in decoder.feed(line.encode() + b"\n")]
    return [*events, *decoder.end()]


async def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    decoder = EventDecoder()
    lines = [line for piece in pieces for line in decoder.lines(piece)]
    last = decoder.last_line()
    return [*lines, last] if last else lines


async def test_data_with_and_without_space() -> None:
    events = await _events(['data: {"a":1}', "", 'data:{"b":2}', ""])
    assert [e.data for e in events] == [b'{"a":1}', b'{"b":2}']
    assert all(e.event == "message" for e in events)


async def test_only_one_leading_space_is_stripped() -> None:
    assert (await _events(["data:  two", ""]))[0].data == b" two"


async def test_comments_and_unknown_fields_are_skipped() -> None:
    events = await _events([": keep-alive", "id: 7", "retry: 10", "data: x", ""])
    assert events == [ServerSentEvent("message", b"x")]


async def test_named_events_and_multiline_data() -> None:
    events = await _events(["event: sglext_ids", "data: [1]", "", "data: a", "data: b", ""])
    assert events == [ServerSentEvent("sglext_ids", b"[1]"), ServerSentEvent("message", b"a\nb")]


async def test_last_event_without_blank_line_is_kept() -> None:
    # TGI's /generate_stream ends the body after its last event.
    assert (await _events(['data:{"end":true}']))[0].data == b'{"end":true}'


async def test_blank_lines_alone_yield_nothing() -> None:
    assert await _events(["", "", ": ping", ""]) == []


async def test_lines_split_anywhere_across_chunks() -> None:
    data = b'data: {"a":1}\n\ndata:{"b":2}\n\n'
    expected = [b'data: {"a":1}', b"", b'data:{"b":2}', b""]
    for cut in range(1, len(data)):
        assert await _split(data, [cut]) == expected
    assert await _split(data, list(range(1, len(data)))) == expected  # one byte at a time


async def test_crlf_and_cr_line_ends_even_split_between_chunks() -> None:
    data = b"data: a\r\n\r\ndata: b\r\rdata: c"
    expected = [b"data: a", b"", b"data: b", b"", b"data: c"]
    for cut in range(1, len(data)):
        assert await _split(data, [cut]) == expected


async def test_a_line_without_end_is_refused_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("switchyard.servicekit.sse.MAX_LINE_BYTES", 8)
    with pytest.raises(LineTooLong):
        await _split(b"data: 0123456789", [4, 12])


def test_the_decoder_gives_every_event_a_chunk_completes_at_once() -> None:
    """What one read of a stream holds is handed over together (the adapter relays it as
    one batch), and the same events however the bytes were cut."""
    data = b'data: {"a":1}\n\ndata:{"b":2}\r\n\r\n: ping\n\nevent: x\ndata: 3\n\ndata: end'
    decoder = EventDecoder()
    whole = [*decoder.feed(data), *decoder.end()]
    assert len(decoder.feed(b"")) == 0
    assert whole == [
        ServerSentEvent("message", b'{"a":1}'),
        ServerSentEvent("message", b'{"b":2}'),
        ServerSentEvent("x", b"3"),
        ServerSentEvent("message", b"end"),  # the stream's end completes it
    ]
    for cut in range(1, len(data)):
        decoder = EventDecoder()
        first = decoder.feed(data[:cut])
        assert [*first, *decoder.feed(data[cut:]), *decoder.end()] == whole
        assert len(first) == sum(1 for event_end in (15, 31, 57) if cut >= event_end)
