"""The scale subresource and mode: external: `kubectl scale`, HPA and KEDA decide the replicas,
the operator runs them (clamped to [min, max]) and never writes them back or fights them."""

from __future__ import annotations

import copy
from typing import Any

import kmock
import kubernetes_validate
import pytest
import yaml
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from switchyard.operator import api, naming
from switchyard.operator.crd import crd_manifest
from switchyard.operator.kube import ModelBackendResource
from tests.operator.apiserver import BACKENDS, ApiServer
from tests.operator.crd_validation import crd_errors
from tests.operator.harness import (
    EXAMPLES_DIR,
    NAMESPACE,
    FakeClock,
    FakeLoad,
    OperatorThread,
    eventually,
    example,
)
from tests.operator.steps import create, status_of
from tests.operator.test_scaler import replicas, replicas_become, replicas_stay

K8S_VERSION = "1.33"
NAME = "demo-vllm-external"


def scale_spec() -> dict[str, Any]:
    (version,) = crd_manifest()["spec"]["versions"]
    scale: dict[str, Any] = version["subresources"]["scale"]
    return scale


def scale_patch(count: int) -> dict[str, Any]:
    """What the API server makes of `kubectl scale --replicas=count`: the Scale's
    spec.replicas, written at the CRD's specReplicasPath (a merge patch of the object)."""
    patch: dict[str, Any] = {}
    node = patch
    *parents, leaf = scale_spec()["specReplicasPath"].strip(".").split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = count
    return patch


async def kubectl_scale(client: AsyncClient, name: str, count: int) -> None:
    await client.patch(
        ModelBackendResource, name, scale_patch(count), namespace=NAMESPACE,
        patch_type=PatchType.MERGE,
    )  # fmt: skip


def operator_writes(api_server: ApiServer) -> list[dict[str, Any]]:
    """The bodies of the operator's writes to ModelBackends (its own listener: servers[0])."""
    port = api_server.servers[0].url.port
    return [
        request.data if isinstance(request.data, dict) else {}
        for request in list(api_server)
        if request.url.port == port
        and request.resource == BACKENDS
        and request.action in (kmock.action.UPDATE, kmock.action.CREATE)
    ]


def backend_of(api_server: ApiServer, name: str) -> dict[str, Any]:
    found = api_server.find(BACKENDS, NAMESPACE, name)
    assert found is not None
    return found


async def test_kubectl_scale_moves_the_deployment_and_the_operator_never_writes_it_back(
    api: ApiServer, client: AsyncClient, operator: OperatorThread, load: FakeLoad, clock: FakeClock
) -> None:
    await create(client, example("vllm-sim-external"))  # replicas 1, min 1, max 4
    await replicas_become(api, NAME, 1)

    await kubectl_scale(client, NAME, 3)
    await replicas_become(api, NAME, 3)
    generation = backend_of(api, NAME)["metadata"]["generation"]

    # The operator's policy would go to 4 (load) and later to 1 (idle, past the delay): in
    # mode: external it does neither, pass after pass, and leaves spec.scaling.replicas alone.
    load.set(NAMESPACE, NAME, in_flight=1000)
    await replicas_stay(api, load, NAME, 3)
    load.set(NAMESPACE, NAME, in_flight=0)
    clock.advance(3600)
    await replicas_stay(api, load, NAME, 3)
    await load.passes(NAME, count=2)
    assert replicas(api, NAME) == 3
    backend = backend_of(api, NAME)
    assert backend["spec"]["scaling"]["replicas"] == 3
    assert backend["metadata"]["generation"] == generation  # no spec write by anyone
    writes = operator_writes(api)
    assert writes, "the operator patched nothing at all: the check below would prove nothing"
    assert any("status" in w for w in writes), writes  # the bodies were read
    assert not [w for w in writes if "spec" in w], writes

    # Outside [min, max]: clamped, not refused (HPA's own bounds may differ).
    await kubectl_scale(client, NAME, 10)
    await replicas_become(api, NAME, 4)
    await kubectl_scale(client, NAME, 0)
    await replicas_become(api, NAME, 1)
    assert backend_of(api, NAME)["spec"]["scaling"]["replicas"] == 0

    status = await eventually(lambda: status_of(api, NAME).get("selector") and status_of(api, NAME))
    assert status["selector"] == naming.selector_string(NAME)
    assert isinstance(status["replicas"], int)


async def test_kubectl_scale_is_refused_in_operator_mode(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    await create(client, example("vllm-sim"))  # mode: operator (the default)
    await replicas_become(api, "demo-vllm", 1)
    with pytest.raises(ApiError) as refused:
        await kubectl_scale(client, "demo-vllm", 3)
    assert refused.value.status.code == 422
    assert "needs mode: external" in str(refused.value.status.message)
    assert "replicas" not in backend_of(api, "demo-vllm")["spec"]["scaling"]
    # Switching to external with a count hands the decision over.
    await client.patch(
        ModelBackendResource, "demo-vllm",
        {"spec": {"scaling": {"mode": "external", "replicas": 2}}},
        namespace=NAMESPACE, patch_type=PatchType.MERGE,
    )  # fmt: skip
    await replicas_become(api, "demo-vllm", 2)


def test_the_status_carries_the_scale_paths_on_an_invalid_spec_too() -> None:
    from switchyard.operator.status import ScalingView, backend_status

    patch = backend_status(
        name="m", namespace=NAMESPACE, generation=2, spec=None, deployment=None,
        scaling=ScalingView(0, None), previous={"replicas": 3}, now=0.0, invalid="bad",
    )  # fmt: skip
    assert patch["replicas"] == 3  # the pods last seen: the Deployment is not read
    assert patch["selector"] == naming.selector_string("m")


def test_the_selector_string_selects_the_engine_pods() -> None:
    from tests.operator.apiserver import _selects

    pods = naming.labels("m", "vllm")
    assert _selects(naming.selector_string("m"), pods)
    assert not _selects(naming.selector_string("m"), naming.labels("other", "vllm"))


def test_the_crd_scale_subresource_is_what_the_api_server_accepts() -> None:
    crd = crd_manifest()
    assert crd_errors(crd) == []
    assert scale_spec() == {
        "specReplicasPath": ".spec.scaling.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


@pytest.mark.parametrize(
    ("scale", "error"),
    [
        (
            {"specReplicasPath": ".spec.scaling.mode"},
            "specReplicasPath: Invalid value: .spec.scaling.mode should be a field of type integer",
        ),
        ({"specReplicasPath": ".spec.scaling.nope"}, "names no field of the schema"),
        ({"specReplicasPath": ".status.replicas"}, "should be a json path under ('.spec.',)"),
        ({"statusReplicasPath": ".status.selector"}, "should be a field of type integer"),
        ({"labelSelectorPath": ".status.replicas"}, "should be a field of type string"),
        ({"labelSelectorPath": ".metadata.name"}, "should be a json path under"),
        ({"specReplicasPath": None}, "specReplicasPath: Required value"),
    ],
)
def test_the_validator_refuses_bad_scale_paths(scale: dict[str, Any], error: str) -> None:
    crd = copy.deepcopy(crd_manifest())
    subresource = crd["spec"]["versions"][0]["subresources"]["scale"]
    for key, value in scale.items():
        if value is None:
            del subresource[key]
        else:
            subresource[key] = value
    errors = crd_errors(crd)
    assert any(error in e for e in errors), errors


def _target_matches_the_crd(ref: dict[str, Any]) -> None:
    crd = crd_manifest()
    group, version = ref["apiVersion"].split("/")
    assert group == crd["spec"]["group"] == api.GROUP
    (served,) = crd["spec"]["versions"]
    assert version == served["name"]
    assert ref["kind"] == crd["spec"]["names"]["kind"]
    assert "scale" in served["subresources"]
    assert ref["name"] == example("vllm-sim-external")["metadata"]["name"]


def test_the_hpa_example_is_a_valid_hpa_targeting_a_scalable_model_backend() -> None:
    hpa = yaml.safe_load((EXAMPLES_DIR / "autoscaling" / "hpa.yaml").read_text())
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    _target_matches_the_crd(hpa["spec"]["scaleTargetRef"])
    target = example("vllm-sim-external")["spec"]["scaling"]
    assert target["mode"] == "external"
    assert hpa["spec"]["minReplicas"] >= target["minReplicas"]
    assert hpa["spec"]["maxReplicas"] <= target["maxReplicas"]


def test_a_broken_hpa_is_refused_by_the_schema() -> None:
    hpa = yaml.safe_load((EXAMPLES_DIR / "autoscaling" / "hpa.yaml").read_text())
    del hpa["spec"]["scaleTargetRef"]["kind"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_the_keda_example_has_a_scaled_object_shape() -> None:
    """KEDA's CRD schema is not available offline: the fields KEDA needs, checked by hand."""
    scaled = yaml.safe_load((EXAMPLES_DIR / "autoscaling" / "keda-scaledobject.yaml").read_text())
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert scaled["metadata"]["name"]
    spec = scaled["spec"]
    _target_matches_the_crd(spec["scaleTargetRef"])
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
