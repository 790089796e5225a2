"""Without an exporter (the `features` edge and its adapters export no spans) the edge and
the adapter run no OpenTelemetry instrumentation, yet the caller's trace goes through
every hop: the edge's request record carries its trace id, and the engine receives it
under a span id that is none of the caller's."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.edge.conftest import sim_stats
from tests.support.edge import Edge
from tests.support.stacks import Stack

CALLER_SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize("stream", [False, True])
async def test_the_callers_trace_reaches_the_engine(
    features: Edge, feature_stacks: dict[str, Stack], stream: bool
) -> None:
    trace_id = uuid.uuid4().hex
    request_id = f"trace-ids-{trace_id}"
    body = {
        "model": "demo-vllm",
        "messages": [{"role": "user", "content": "trace me"}],
        "max_tokens": 4,
        "stream": stream,
    }
    headers = {
        **features.auth(),
        "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01",
        "x-request-id": request_id,
    }
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{features.url}/v1/chat/completions", json=body, headers=headers
        )
    assert response.status_code == 200, response.text

    record = await features.record(request_id)
    assert record["trace_id"] == trace_id
    recent = (await sim_stats(feature_stacks["vllm"]))["recent"]
    seen = [r["traceparent"] for r in recent if trace_id in (r["traceparent"] or "")]
    assert len(seen) == 1, recent
    version, seen_trace, parent, flags = seen[0].split("-")
    assert (version, seen_trace, flags) == ("00", trace_id, "01")
    assert parent not in (CALLER_SPAN, record.get("span_id"))  # the adapter's own call


async def test_a_request_without_a_trace_gets_one(features: Edge) -> None:
    ids = [f"trace-ids-new-{uuid.uuid4().hex}" for _ in range(2)]
    async with httpx.AsyncClient(timeout=60) as client:
        for request_id in ids:
            response = await client.post(
                f"{features.url}/v1/chat/completions",
                json={"model": "demo-vllm", "messages": [{"role": "user", "content": "x"}]},
                headers={**features.auth(), "x-request-id": request_id},
            )
            assert response.status_code == 200, response.text
    trace_ids = [(await features.record(r))["trace_id"] for r in ids]
    assert len(set(trace_ids)) == 2
    assert all(len(t) == 32 and t != "0" * 32 for t in trace_ids)
