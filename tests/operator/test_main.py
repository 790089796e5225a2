"""`python -m switchyard.operator` as a process: the CRD command, and the operator itself
against the emulator (kubeconfig login, liveness endpoint, children, spans exported over
OTLP, clean exit on SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import get_args

from lightkube import AsyncClient

from switchyard.operator.crd import CRD_PATH
from switchyard.operator.scaling import Reason
from tests.operator.apiserver import ApiServer
from tests.operator.harness import NAMESPACE, eventually, example, kubeconfig
from tests.operator.schema import ROOT
from tests.operator.steps import children_of, create, settled
from tests.support.otlp import ExportedSpan, OtlpCollector
from tests.support.processes import free_port, start, wait_http


def test_crd_command_prints_the_committed_crd() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.operator", "crd"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == (ROOT / CRD_PATH).read_text()


async def test_the_operator_process_serves_a_backend(
    api: ApiServer, client: AsyncClient, tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(kubeconfig(str(api.servers[0].url))))
    liveness = free_port()
    env = {
        "KUBECONFIG": str(config),
        "OPERATOR_NAMESPACES": NAMESPACE,
        "OPERATOR_LIVENESS_PORT": str(liveness),
        "OPERATOR_SCALE_INTERVAL_S": "0.2",
        "OPERATOR_LOG_FORMAT": "json",
    }
    async with OtlpCollector() as collector:
        env |= collector.env
        process = start("operator", ["switchyard.operator"], tmp_path, port=liveness, env=env)
        try:
            # Blocking waits go to a thread: the emulator shares this event loop.
            await asyncio.to_thread(wait_http, process, f"http://127.0.0.1:{liveness}/healthz")
            await create(client, example("tgi-sim"))
            await eventually(lambda: all(children_of(api).values()), what="children")
            await settled(api, "demo-tgi", "Pending")
            # Its reconciles and scaling decisions are exported as the operator's spans.
            reconcile = await eventually(
                lambda: operator_span(collector, "reconcile", "demo-tgi"), what="reconcile span"
            )
            scale = await eventually(
                lambda: operator_span(collector, "scale", "demo-tgi", decided=True),
                what="a scaling decision's span",
            )
            process.signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.process.wait, 20)
            assert code == 0, process.log_tail()
            assert '"event":"reconciled"' in process.log_path.read_text()
        finally:
            await asyncio.to_thread(process.stop)
    assert reconcile.attributes["k8s.namespace.name"] == NAMESPACE
    assert scale.attributes["switchyard.scaling.reason"] in get_args(Reason)
    assert scale.attributes["switchyard.scaling.desired_replicas"] >= 0


def operator_span(
    collector: OtlpCollector, name: str, backend: str, decided: bool = False
) -> ExportedSpan | None:
    """The first span `name` the operator exported about `backend` (for "scale": one that
    decided, once the backend's Deployment existed)."""
    for span in collector.spans:
        if (
            span.service == "operator"
            and span.name == name
            and span.attributes.get("switchyard.model_backend") == backend
            and (not decided or "switchyard.scaling.reason" in span.attributes)
        ):
            return span
    return None
