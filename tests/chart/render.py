"""Render the chart with the real Helm library (helm-sdkpy, Python 3.12): lint it, and install
it with HELM_DRIVER=memory into kmock's Kubernetes emulator, once per case.

Run by the chart tests in the `.venv-chart` interpreter (`make chart-env`):

    HELM_DRIVER=memory .venv-chart/bin/python -m tests.chart.render CASES.json OUT.json

CASES.json: {"chart": PATH, "cases": [{"name", "namespace", "values", "upgrade"?}]}.
OUT.json: {"lint": <helm's lint result>, "cases": {name: {"manifest": [objects], "notes":
str, "hooks": [{"events", "delete_policies", "object"}], "backends": [the ModelBackends in
the emulator after the install], "upgraded_backends": [... after `helm upgrade` with the
case's "upgrade" values, when it has them], "upgraded_secrets": [the Secrets after it]} or
{"error": str}}}. A case's "live_data" ({name, data}) is written into that Secret before the
upgrade, as the API server stores a write (`data` only, base64): what the edge's admin API
does between two releases. The assertions live in the tests (Python 3.11), which read
OUT.json.
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
BACKENDS = kmock.resource("switchyard.dev", "v1alpha1", "modelbackends")
SECRETS = kmock.resource("", "v1", "secrets")
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
    """Fixes to kmock 0.8 for Helm: it answers /api/v1 with groupVersion "/v1" (for "v1"), so
    Helm's REST mapper finds no core kind ("no matches for kind ConfigMap in version v1"); it
    claims Kubernetes 1.26, older than the chart's kubeVersion; and its lists have no `kind`,
    which Helm's status watcher needs to follow hook resources. `serve_openapi` adds the
    OpenAPI documents Helm downloads to validate hooks (it always validates them): empty ones,
    which validate nothing (no kind has a schema), as for a kind a server does not document."""

    def serve_openapi(self) -> None:
        self.fallback["get /openapi/v2"] << b""  # an empty protobuf Document
        self.fallback["get /openapi/v3"] << {"paths": {}}

    async def _serve_list(self, request: Any) -> Any:
        listing = await super()._serve_list(request)
        if isinstance(listing, dict) and request.resource is not None:
            info = self.resources[request.resource]
            listing["kind"] = f"{info.kind}List"
            group, version = request.resource.group, request.resource.version
            listing["apiVersion"] = f"{group}/{version}" if group else version
        return listing

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
        emulator.serve_openapi()
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
        out = {
            "manifest": manifest,
            "notes": info.get("notes", ""),
            "hooks": [
                {
                    "events": hook.get("events") or [],
                    "delete_policies": hook.get("delete_policies") or [],
                    "object": yaml.safe_load(hook.get("manifest", "")),
                }
                for hook in release.get("hooks") or []
            ],
            "backends": backends_in(emulator),
        }
        if "upgrade" in case:
            if "live_data" in case:
                live = case["live_data"]
                obj = emulator.objects[SECRETS, case["namespace"], live["name"]]
                obj.patch({"stringData": None, "data": live["data"]})
            try:
                await helm_sdkpy.Upgrade(config).run(
                    "switchyard", chart, values=case["upgrade"] or None, wait=False, timeout=60
                )
            except helm_sdkpy.HelmError as exc:
                return {"error": f"upgrade: {exc}"}
            out["upgraded_backends"] = backends_in(emulator)
            out["upgraded_secrets"] = [
                dict(obj.raw)
                for (resource, _, _), obj in emulator.objects.items()
                if resource == SECRETS and not obj.deleted
            ]
        return out


def backends_in(emulator: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    """The ModelBackends the emulator holds now."""
    return [
        dict(obj.raw)
        for (resource, _, _), obj in emulator.objects.items()
        if resource == BACKENDS and not obj.deleted
    ]


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
