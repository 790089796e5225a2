"""kmock's Kubernetes API emulator over real HTTP, for the edge's and the operator's tests.

The emulator knows the built-in resources (`load_bundled`) and Switchyard's ModelBackend;
clients reach it like a cluster: in-process through a lightkube client, from other
processes through a kubeconfig file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import kmock
import yaml
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

MODEL_BACKENDS = "switchyard.dev/v1alpha1/modelbackends"

#: kmock's actions as the RBAC verbs that authorize them (a PUT is `update`: kmock has no
#: action for it, so callers that PUT tell it apart by the request's method).
RBAC_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


@dataclass
class Cluster:
    emulator: kmock.KubernetesEmulator
    url: str
    client: AsyncClient
    kubeconfig: Path


def write_kubeconfig(path: Path, url: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tests", "user": {"token": "tests"}}],
        "contexts": [
            {
                "name": "kmock",
                "context": {"cluster": "kmock", "user": "tests", "namespace": "default"},
            }
        ],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def emulated_cluster(directory: Path) -> AsyncIterator[Cluster]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources.load_bundled()
        emulator.resources[MODEL_BACKENDS] = kmock.ResourceInfo(
            kind="ModelBackend",
            singular="modelbackend",
            namespaced=True,
            shortnames={"mb"},
            subresources={"status"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
        url = str(server.url).rstrip("/")
        kubeconfig = write_kubeconfig(directory / "kubeconfig.yaml", url)
        client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="tests")
        try:
            yield Cluster(emulator, url, client, kubeconfig)
        finally:
            await client.close()
