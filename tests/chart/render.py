"""Render the chart with the real Helm library (helm-sdkpy, Python 3.12): lint it, and install
it with HELM_DRIVER=memory into kmock's Kubernetes emulator, once per case.

Run by the chart tests in the `.venv-chart` interpreter (`make chart-env`):

    HELM_DRIVER=memory .venv-chart/bin/python -m tests.chart.render CASES.json OUT.json

CASES.json: {"chart": PATH, "cases": [{"name", "namespace", "values"}]}. OUT.json:
{"lint": <helm's lint result>, "cases": {name: {"manifest": [objects], "notes": str} or
{"error": str}}}. The assertions live in the tests (Python 3.11), which read OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import helm_sdkpy
import kmock
import yaml

# Standalone: this runs in the chart's own environment (no lightkube, no workspace).
MODEL_BACKENDS = "switchyard.dev/v1alpha1/modelbackends"
#: Custom resources the chart may render besides its own (Prometheus Operator's).
MONITORING = {
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", "servicemonitor"),
    "monitoring.coreos.com/v1/podmonitors": ("PodMonitor", "podmonitor"),
    "monitoring.coreos.com/v1/prometheusrules": ("PrometheusRule", "prometheusrule"),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


#: The Kubernetes version the emulator claims (the chart's kubeVersion is checked against
#: it) and the objects are validated against.
KUBERNETES_VERSION = (1, 33)


class Emulator(kmock.KubernetesEmulator):
    """Two fixes to kmock 0.8's discovery: it answers /api/v1 with groupVersion "/v1" (for
    "v1"), so Helm's REST mapper finds no core kind ("no matches for kind ConfigMap in version
    v1"); and it claims Kubernetes 1.26, older than the chart's kubeVersion."""

    async def _serve_server_version(self, request: Any) -> Any:
        doc: dict[str, Any] = dict(await super()._serve_server_version(request))  # type: ignore[arg-type]
        major, minor = KUBERNETES_VERSION
        doc.update(major=str(major), minor=str(minor), gitVersion=f"v{major}.{minor}.0")
        return doc

    async def _serve_version(self, request: Any) -> Any:
        doc = await super()._serve_version(request)
        if isinstance(doc, dict) and str(doc.get("groupVersion", "")).startswith("/"):
            doc["groupVersion"] = doc["groupVersion"][1:]
        return doc


def kubeconfig_for(url: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "chart-tests", "user": {"token": "chart-tests"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "chart-tests"}}],
        "current-context": "kmock",
    }
    return yaml.safe_dump(config)


async def install(chart: str, case: dict[str, Any], workdir: Path) -> dict[str, Any]:
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources.load_bundled()
        emulator.resources[MODEL_BACKENDS] = kmock.ResourceInfo(
            kind="ModelBackend",
            singular="modelbackend",
            namespaced=True,
            shortnames={"mb"},
            subresources={"status"},
            verbs=VERBS,
        )
        for resource, (kind, singular) in MONITORING.items():
            emulator.resources[resource] = kmock.ResourceInfo(
                kind=kind, singular=singular, namespaced=True, verbs=VERBS
            )
        kubeconfig = workdir / f"{case['name']}.kubeconfig"
        await asyncio.to_thread(kubeconfig.write_text, kubeconfig_for(str(server.url).rstrip("/")))
        config = helm_sdkpy.Configuration(namespace=case["namespace"], kubeconfig=str(kubeconfig))
        try:
            release = await helm_sdkpy.Install(config).run(
                "switchyard",
                chart,
                values=case["values"] or None,
                wait=False,
                timeout=60,
            )
        except helm_sdkpy.HelmError as exc:
            return {"error": str(exc)}
        manifest = [doc for doc in yaml.safe_load_all(release.get("manifest", "")) if doc]
        info = release.get("info") or {}
        return {"manifest": manifest, "notes": info.get("notes", "")}


async def render(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    chart = spec["chart"]
    lint = await helm_sdkpy.Lint(helm_sdkpy.Configuration(namespace="default")).run(chart)
    results = {case["name"]: await install(chart, case, workdir) for case in spec["cases"]}
    return {"lint": lint, "cases": results}


def main(cases_path: str, out_path: str) -> None:
    if os.environ.get("HELM_DRIVER") != "memory":
        raise SystemExit("set HELM_DRIVER=memory before starting (the Go library reads it once)")
    spec = json.loads(Path(cases_path).read_text())
    out = asyncio.run(render(spec, Path(out_path).parent))
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
