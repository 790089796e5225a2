"""Where the scaler's load comes from: the adapters' `GetLoad` reports.

`LoadSource` is the seam tests replace. The real one lists a backend's ready pods and asks
each adapter (`<podIP>:50051`) for its load, a few at a time and with a deadline each; a
replica counts as busy with max(running + waiting in its engine, requests in flight through
its adapter). An adapter that does not answer is left out of `reporting`, which keeps the
scaler from scaling down on partial information.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from switchyard.operator import naming
from switchyard.operator.scaling import Load
from switchyard.servicekit.grpc_tracing import call_metadata, client_interceptors
from switchyard.servicekit.telemetry import tracing_mode

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BackendRef:
    namespace: str
    name: str


class LoadSource(Protocol):
    async def read(self, backend: BackendRef) -> Load:
        """The backend's load now (summed over the replicas that answered)."""
        ...


def pod_is_ready(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


def report_in_flight(report: pb.LoadReport) -> int:
    return max(report.running + report.waiting, report.adapter_in_flight)


def sum_reports(reports: Iterable[pb.LoadReport | None]) -> Load:
    answered = [r for r in reports if r is not None]
    return Load(in_flight=sum(report_in_flight(r) for r in answered), reporting=len(answered))


class GrpcLoadSource:
    def __init__(
        self,
        client: AsyncClient,
        *,
        timeout_s: float,
        concurrency: int,
        port: int = naming.ADAPTER_PORT,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._limit = asyncio.Semaphore(concurrency)
        self._port = port
        self._tracing = tracing_mode()

    async def read(self, backend: BackendRef) -> Load:
        addresses = [
            f"{pod['status']['podIP']}:{self._port}" for pod in await self._ready_pods(backend)
        ]
        reports = await asyncio.gather(*(self._get_load(address) for address in addresses))
        return sum_reports(reports)

    async def _ready_pods(self, backend: BackendRef) -> list[dict[str, Any]]:
        pods = []
        labels: dict[str, Any] = dict(naming.selector(backend.name))
        async for pod in self._client.list(Pod, namespace=backend.namespace, labels=labels):
            raw = pod.to_dict()
            if pod_is_ready(raw):
                pods.append(raw)
        return pods

    async def _get_load(self, address: str) -> pb.LoadReport | None:
        async with self._limit:
            try:
                # Traced: the call carries the scaling decision's trace to the adapter.
                async with grpc.aio.insecure_channel(
                    address, interceptors=client_interceptors(address, mode=self._tracing)
                ) as channel:
                    stub = pb_grpc.InferenceServiceStub(channel)
                    report: pb.LoadReport = await stub.GetLoad(
                        pb.GetLoadRequest(),
                        timeout=self._timeout_s,
                        metadata=call_metadata(self._tracing),
                    )
                    return report
            except grpc.aio.AioRpcError as error:
                log.info("load_report_failed", address=address, code=error.code().name)
                return None
