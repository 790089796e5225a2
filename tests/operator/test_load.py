"""The gRPC load source: it finds a backend's ready pods and sums their adapters' reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from switchyard.operator import naming
from switchyard.operator.load import BackendRef, GrpcLoadSource, pod_is_ready, sum_reports
from switchyard.operator.scaling import Load
from tests.operator.apiserver import ApiServer
from tests.operator.harness import NAMESPACE, kubeconfig
from tests.support.polling import TIMEOUT_S
from tests.support.processes import free_port


class FakeAdapter(pb_grpc.InferenceServiceServicer):
    def __init__(self, report: pb.LoadReport) -> None:
        self.report = report
        self.calls = 0
        #: The `traceparent` each call came with (None: none).
        self.traceparents: list[str | None] = []

    async def GetLoad(self, request: pb.GetLoadRequest, context: Any) -> pb.LoadReport:
        self.calls += 1
        metadata = dict(context.invocation_metadata())
        self.traceparents.append(metadata.get("traceparent"))
        return self.report

    async def Generate(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "load reports only")

    async def GenerateStream(
        self, request: Any, context: Any
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "load reports only")
        yield pb.GenerateStreamResponse()  # never reached: abort raises

    async def CountTokens(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "load reports only")

    async def ListModels(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "load reports only")

    async def Embed(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "load reports only")


@pytest.fixture
def port() -> int:
    return free_port()


async def start_adapter(address: str, report: pb.LoadReport) -> tuple[grpc.aio.Server, FakeAdapter]:
    server = grpc.aio.server()
    adapter = FakeAdapter(report)
    pb_grpc.add_InferenceServiceServicer_to_server(adapter, server)
    server.add_insecure_port(address)
    await server.start()
    return server, adapter


async def add_pod(
    client: AsyncClient,
    name: str,
    backend: str,
    ip: str | None,
    ready: bool,
    deleting: bool = False,
) -> None:
    pod = Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": naming.labels(backend, "vllm"),
            },
            "spec": {"containers": [{"name": "engine", "image": "x"}]},
        }
    )
    await client.create(cast(Pod, pod))
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip:
        status["podIP"] = ip
    await client.patch(
        Pod.Status, name, {"status": status}, namespace=NAMESPACE, patch_type=PatchType.MERGE
    )


async def test_reads_every_ready_pod_of_the_backend(
    api: ApiServer, client: AsyncClient, port: int
) -> None:
    busy, _ = await start_adapter(
        f"127.0.0.1:{port}", pb.LoadReport(running=3, waiting=2, adapter_in_flight=4, ready=True)
    )
    queued, _ = await start_adapter(
        f"127.0.0.2:{port}", pb.LoadReport(running=1, waiting=0, adapter_in_flight=7, ready=True)
    )
    try:
        await add_pod(client, "a", "llama", "127.0.0.1", ready=True)
        await add_pod(client, "b", "llama", "127.0.0.2", ready=True)
        await add_pod(client, "loading", "llama", "127.0.0.4", ready=False)
        await add_pod(client, "no-ip", "llama", None, ready=True)
        await add_pod(client, "silent", "llama", "127.0.0.3", ready=True)  # nothing listens
        await add_pod(client, "other", "qwen", "127.0.0.1", ready=True)
        config = KubeConfig.from_dict(kubeconfig(str(api.url), NAMESPACE))
        async with AsyncClient(config=config) as operator_client:
            # The silent pod is refused at once: the bound is only for a loaded machine.
            source = GrpcLoadSource(operator_client, timeout_s=TIMEOUT_S, concurrency=2, port=port)
            load = await source.read(BackendRef(NAMESPACE, "llama"))
        # a: max(3 + 2, 4) = 5; b: max(1 + 0, 7) = 7; the silent one did not report.
        assert load == Load(in_flight=12, reporting=2)
    finally:
        await busy.stop(0)
        await queued.stop(0)


async def test_a_load_report_call_carries_the_callers_trace(
    api: ApiServer, client: AsyncClient, port: int
) -> None:
    """The scaling decision's span is the caller's: its trace reaches the adapter."""
    server, adapter = await start_adapter(f"127.0.0.1:{port}", pb.LoadReport(running=1))
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    caller = NonRecordingSpan(
        SpanContext(trace_id, 0xB7AD6B7169203331, is_remote=False, trace_flags=TraceFlags(1))
    )
    try:
        await add_pod(client, "a", "llama", "127.0.0.1", ready=True)
        config = KubeConfig.from_dict(kubeconfig(str(api.url), NAMESPACE))
        async with AsyncClient(config=config) as operator_client:
            source = GrpcLoadSource(operator_client, timeout_s=TIMEOUT_S, concurrency=1, port=port)
            with trace.use_span(caller):
                load = await source.read(BackendRef(NAMESPACE, "llama"))
        assert load == Load(in_flight=1, reporting=1)
        (traceparent,) = adapter.traceparents
        assert traceparent is not None, "no trace context sent"
        _, sent_trace, parent, _ = traceparent.split("-")
        assert sent_trace == f"{trace_id:032x}"
        assert int(parent, 16) != 0
    finally:
        await server.stop(0)


def test_pod_readiness() -> None:
    ready = {
        "metadata": {},
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_is_ready(ready)
    assert not pod_is_ready({**ready, "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not pod_is_ready({"metadata": {}, "status": {"podIP": "10.0.0.1"}})


def test_sum_of_reports() -> None:
    reports = [pb.LoadReport(running=2, waiting=1), None, pb.LoadReport(adapter_in_flight=5)]
    assert sum_reports(reports) == Load(in_flight=8, reporting=2)
    assert sum_reports([]) == Load(in_flight=0, reporting=0)
