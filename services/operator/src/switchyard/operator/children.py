"""A ModelBackend's children as plain Kubernetes objects: pure functions of the spec.

The Deployment's pod template depends on what the engine serves (engine, model, images,
flags, resources, scheduling) and never on scaling, so a scaling change only moves
`spec.replicas` while a model or engine change rolls the pods. Owner references are added
by the handler (`kopf.adopt`), not here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from switchyard.operator import naming
from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.engines import (
    MODEL_CACHE_PATH,
    EngineLaunch,
    api_key_env,
    chat_template_mount,
    chat_template_volume,
    engine_launch,
)
from switchyard.operator.settings import OperatorSettings

Obj = dict[str, Any]

#: Containers we build ourselves (the adapter, the simulators) run locked down; their images
#: must name a numeric non-root USER.
_HARDENED: Final[Obj] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def hardened() -> Obj:
    return copy.deepcopy(_HARDENED)


@dataclass(frozen=True, slots=True)
class Children:
    deployment: Obj
    service: Obj
    pdb: Obj

    def all(self) -> list[Obj]:
        return [self.deployment, self.service, self.pdb]


def render(
    name: str,
    namespace: str,
    spec: ModelBackendSpec,
    settings: OperatorSettings,
    replicas: int,
) -> Children:
    return Children(
        deployment=deployment(name, namespace, spec, settings, replicas),
        service=service(name, namespace, spec),
        pdb=pdb(name, namespace, spec),
    )


def _meta(name: str, namespace: str, backend: str, spec: ModelBackendSpec) -> Obj:
    return {"name": name, "namespace": namespace, "labels": naming.labels(backend, spec.engine)}


def template_hash(template: Obj) -> str:
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deployment(
    name: str,
    namespace: str,
    spec: ModelBackendSpec,
    settings: OperatorSettings,
    replicas: int,
) -> Obj:
    template = pod_template(name, spec, settings)
    meta = _meta(naming.deployment_name(name), namespace, name, spec)
    meta["annotations"] = {naming.TEMPLATE_HASH_ANNOTATION: template_hash(template)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": naming.selector(name)},
            # Never drop a serving replica for a rollout: the new pod loads its model first.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            # Loading a model is slow: report a stuck rollout only after the startup budget.
            "progressDeadlineSeconds": settings.startup_timeout_s + 600,
            "template": template,
        },
    }


def pod_template(name: str, spec: ModelBackendSpec, settings: OperatorSettings) -> Obj:
    served = spec.effective_served_name(name)
    launch = engine_launch(spec, served, settings)
    pod: Obj = {
        # Service links would put e.g. VLLM_PORT=tcp://... into the environment (a Service
        # named "vllm"), which the engines read as their own settings.
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_s,
        "containers": [
            engine_container(spec, launch, settings),
            adapter_container(spec, served, launch.port, settings),
        ],
        "volumes": volumes(spec),
    }
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    if not spec.simulated:
        if spec.node_selector:
            pod["nodeSelector"] = dict(spec.node_selector)
        if spec.runtime_class_name:
            pod["runtimeClassName"] = spec.runtime_class_name
    return {
        "metadata": {
            "labels": naming.labels(name, spec.engine),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(naming.ADAPTER_METRICS_PORT),
            },
        },
        "spec": pod,
    }


def engine_container(
    spec: ModelBackendSpec, launch: EngineLaunch, settings: OperatorSettings
) -> Obj:
    container: Obj = {
        "name": "engine",
        "image": launch.image,
        "imagePullPolicy": settings.image_pull_policy if spec.simulated else "IfNotPresent",
        "command": launch.command,
        "args": launch.args,
        "ports": [{"name": "http", "containerPort": launch.port, "protocol": "TCP"}],
        "env": launch.env,
        "resources": engine_resources(spec, settings),
        "startupProbe": launch.startup_probe,
        "readinessProbe": launch.readiness_probe,
        "livenessProbe": launch.liveness_probe,
    }
    # The adapter gets SIGTERM at once, the engine only after its preStop hook: it stays up
    # while the adapter finishes the requests in flight and exits.
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.engine_prestop_s}}}
    if spec.simulated:
        container["securityContext"] = hardened()
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    else:
        container["volumeMounts"] = [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {
                "name": "model-cache",
                "mountPath": MODEL_CACHE_PATH,
                "readOnly": bool(spec.model_cache and spec.model_cache.read_only),
            },
        ]
    template = chat_template_mount(spec)
    if template is not None:
        container["volumeMounts"].append(template)
    return container


def engine_resources(spec: ModelBackendSpec, settings: OperatorSettings) -> Obj:
    if spec.simulated:
        return {
            "requests": {"cpu": settings.simulator_cpu, "memory": settings.simulator_memory},
            "limits": {"memory": settings.simulator_memory},
        }
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    res = spec.resources
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if res.gpus:
        # Extended resources: requests must equal limits.
        requests[res.gpu_resource] = limits[res.gpu_resource] = str(res.gpus)
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def adapter_container(
    spec: ModelBackendSpec, served: str, engine_port: int, settings: OperatorSettings
) -> Obj:
    image = (spec.adapter.image if spec.adapter else None) or settings.adapter_image(spec.engine)
    env = [
        {"name": "ADAPTER_ENGINE_URL", "value": f"http://127.0.0.1:{engine_port}"},
        {"name": "ADAPTER_SERVED_MODEL_NAME", "value": served},
        {"name": "ADAPTER_PORT", "value": str(naming.ADAPTER_PORT)},
        {"name": "ADAPTER_METRICS_PORT", "value": str(naming.ADAPTER_METRICS_PORT)},
        # Its drain, from the setting the pod's grace period is derived from.
        {"name": "ADAPTER_DRAIN_DELAY_S", "value": str(settings.drain_delay_s)},
        {"name": "ADAPTER_SHUTDOWN_GRACE_S", "value": str(settings.adapter_shutdown_grace_s)},
    ]
    env += [{"name": key, "value": value} for key, value in sorted(settings.adapter_env.items())]
    # The engine's key, sent as a Bearer token; from the Secret, like the engine's own.
    env += api_key_env(spec, "ADAPTER_ENGINE_API_KEY")
    return {
        "name": "adapter",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [
            {"name": "grpc", "containerPort": naming.ADAPTER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": naming.ADAPTER_METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": {
            "requests": {"cpu": settings.adapter_cpu, "memory": settings.adapter_memory},
            "limits": {"memory": settings.adapter_memory},
        },
        # SERVING only while the engine can generate: the pod is ready when the model is.
        "readinessProbe": {
            "grpc": {"port": naming.ADAPTER_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        # Not the gRPC health: it reports NOT_SERVING whenever the engine is loading or down,
        # and restarting the adapter would not help the engine. Liveness = it accepts calls.
        "livenessProbe": {
            "tcpSocket": {"port": "grpc"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": hardened(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def volumes(spec: ModelBackendSpec) -> list[Obj]:
    out: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    template = chat_template_volume(spec)
    if template is not None:
        out.append(template)
    if spec.simulated:
        return out
    out.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}})
    cache = spec.model_cache
    if cache and cache.claim_name:
        claim: Obj = {"claimName": cache.claim_name}
        if cache.read_only:
            claim["readOnly"] = True
        out.append({"name": "model-cache", "persistentVolumeClaim": claim})
    elif cache and cache.size_limit:
        out.append({"name": "model-cache", "emptyDir": {"sizeLimit": cache.size_limit}})
    else:
        out.append({"name": "model-cache", "emptyDir": {}})
    return out


def service(name: str, namespace: str, spec: ModelBackendSpec) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(naming.service_name(name), namespace, name, spec),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector(name),
            "ports": [
                {
                    "name": "grpc",
                    "port": naming.ADAPTER_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }


def pdb(name: str, namespace: str, spec: ModelBackendSpec) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(naming.pdb_name(name), namespace, name, spec),
        "spec": {
            # Drains move one replica at a time; a backend of one replica can still be drained.
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector(name)},
            # A pod still loading (or crash-looping) must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
