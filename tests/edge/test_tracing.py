"""One trace spans edge → adapter → engine, as exported by the services themselves (OTLP)."""

from __future__ import annotations

import httpx

from tests.support.edge import Edge
from tests.support.otlp import ExportedSpan, OtlpCollector
from tests.support.stacks import Stack

SERVER, CLIENT = 2, 3  # OTLP SpanKind values


def _one(spans: list[ExportedSpan], service: str, kind: int, name_part: str) -> ExportedSpan:
    found = [s for s in spans if s.service == service and s.kind == kind and name_part in s.name]
    assert len(found) == 1, (service, kind, name_part, spans)
    return found[0]


async def test_a_streamed_request_is_one_trace_across_every_hop(
    edge: Edge, engines: dict[str, Stack], collector: OtlpCollector
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    caller_span = "b7ad6b7169203331"
    body = {
        "model": "demo-vllm",
        "messages": [{"role": "user", "content": "trace me"}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {**edge.auth(), "traceparent": f"00-{trace_id}-{caller_span}-01"}
    async with httpx.AsyncClient() as client:
        async with client.stream(
            "POST", f"{edge.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            text = "".join([line async for line in response.aiter_lines()])
        assert "[DONE]" in text
        recent = (await client.get(f"{engines['vllm'].sim_url}/sim/stats")).json()["recent"]

    spans = await collector.wait_for(trace_id, {"edge", "adapter-vllm"})
    edge_server = _one(spans, "edge", SERVER, "/v1/chat/completions")
    edge_client = _one(spans, "edge", CLIENT, "GenerateStream")
    adapter_server = _one(spans, "adapter-vllm", SERVER, "GenerateStream")
    adapter_client = _one(spans, "adapter-vllm", CLIENT, "POST")

    assert edge_server.parent_span_id == caller_span
    assert edge_client.parent_span_id == edge_server.span_id
    assert adapter_server.parent_span_id == edge_client.span_id
    assert adapter_client.parent_span_id == adapter_server.span_id
    # The engine got the adapter's client span as its parent: the same trace, one hop on.
    engine_parents = [
        r["traceparent"].split("-")[2] for r in recent if trace_id in (r["traceparent"] or "")
    ]
    assert engine_parents == [adapter_client.span_id]

    # GenAI attributes on the edge's server span and the adapter's.
    assert edge_server.attributes["gen_ai.request.model"] == "demo-vllm"
    assert edge_server.attributes["gen_ai.usage.output_tokens"] > 0
    assert edge_server.attributes["gen_ai.usage.input_tokens"] > 0
    assert (
        adapter_server.attributes["gen_ai.usage.output_tokens"]
        == edge_server.attributes["gen_ai.usage.output_tokens"]
    )
