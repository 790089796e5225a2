"""Names, labels and annotations the operator and the rest of the platform agree on.

The edge relies on these (the Service name, the endpoint, the demand annotation): change
them only together with `services/edge`.
"""

from __future__ import annotations

from typing import Final

ADAPTER_PORT: Final = 50051
ADAPTER_METRICS_PORT: Final = 9090
FIELD_MANAGER: Final = "switchyard-operator"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_BACKEND: Final = "switchyard.dev/model-backend"
LABEL_ENGINE: Final = "switchyard.dev/engine"
MANAGED_BY: Final = "switchyard-operator"

#: Set by the edge (RFC 3339) when a request finds no ready replica: wakes a backend at zero.
DEMAND_ANNOTATION: Final = "switchyard.dev/demanded-at"
#: On the Deployment: a hash of the pod template it was last given (a change rolls it out).
TEMPLATE_HASH_ANNOTATION: Final = "switchyard.dev/template-hash"


def deployment_name(backend: str) -> str:
    return backend


def service_name(backend: str) -> str:
    return f"{backend}-adapter"


def pdb_name(backend: str) -> str:
    return backend


def endpoint(backend: str, namespace: str) -> str:
    """The adapters' gRPC address, as the edge dials it."""
    return f"{service_name(backend)}.{namespace}.svc:{ADAPTER_PORT}"


def selector(backend: str) -> dict[str, str]:
    """Selects a backend's pods: stable for its lifetime (a Deployment selector is immutable)."""
    return {LABEL_NAME: "model-backend", LABEL_INSTANCE: backend}


def selector_string(backend: str) -> str:
    """`selector` as a label selector string (status.selector, for the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector(backend).items()))


def labels(backend: str, engine: str) -> dict[str, str]:
    """Labels of every child object and of the pods."""
    return {
        **selector(backend),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "switchyard",
        LABEL_BACKEND: backend,
        LABEL_ENGINE: engine,
    }
