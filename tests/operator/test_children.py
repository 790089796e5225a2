"""The children of each example: valid Kubernetes objects, with the shape the platform needs."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes_validate
import pytest

from switchyard.operator import naming
from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.children import Children, render, template_hash
from switchyard.operator.settings import ADAPTER_EXIT_S, ENGINE_STOP_S, OperatorSettings
from tests.operator.harness import EXAMPLES, example, operator_settings

K8S_VERSION = "1.33"
SETTINGS = operator_settings("models")


def children(name: str, replicas: int = 2, **changes: Any) -> Children:
    raw = example(name)
    spec = ModelBackendSpec.model_validate({**raw["spec"], **changes})
    return render(raw["metadata"]["name"], "models", spec, SETTINGS, replicas)


def containers(objs: Children) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in objs.deployment["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize("name", EXAMPLES)
def test_children_are_valid_kubernetes_objects(name: str) -> None:
    objs = children(name)
    owner = {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "ModelBackend",
        "metadata": {"name": "x", "namespace": "models", "uid": "1234"},
    }
    kopf.adopt(objs.all(), owner=kopf.Body(owner))  # type: ignore[arg-type]
    for obj in objs.all():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_child_and_the_pods_carry_the_labels(name: str) -> None:
    raw = example(name)
    objs = children(name)
    expected = {
        "app.kubernetes.io/name": "model-backend",
        "app.kubernetes.io/instance": raw["metadata"]["name"],
        "app.kubernetes.io/managed-by": "switchyard-operator",
        "app.kubernetes.io/part-of": "switchyard",
        "switchyard.dev/model-backend": raw["metadata"]["name"],
        "switchyard.dev/engine": raw["spec"]["engine"],
    }
    for obj in objs.all():
        assert obj["metadata"]["labels"] == expected
    assert objs.deployment["spec"]["template"]["metadata"]["labels"] == expected


@pytest.mark.parametrize("name", EXAMPLES)
def test_names_and_selectors(name: str) -> None:
    backend = example(name)["metadata"]["name"]
    objs = children(name)
    selector = {"app.kubernetes.io/name": "model-backend", "app.kubernetes.io/instance": backend}
    assert objs.deployment["metadata"]["name"] == backend
    assert objs.deployment["spec"]["selector"] == {"matchLabels": selector}
    assert objs.service["metadata"]["name"] == f"{backend}-adapter"
    assert objs.service["spec"]["selector"] == selector
    assert objs.service["spec"]["type"] == "ClusterIP"
    assert objs.service["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 50051,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]
    assert objs.pdb["metadata"]["name"] == backend
    assert objs.pdb["spec"]["selector"] == {"matchLabels": selector}
    assert objs.pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_adapter_sidecar(name: str) -> None:
    raw = example(name)
    engine = raw["spec"]["engine"]
    served = raw["spec"].get("servedModelName", raw["metadata"]["name"])
    adapter = containers(children(name, apiKeySecret=None))["adapter"]
    engine_port = {"vllm": 8000, "sglang": 30000, "tgi": 3000}[engine]
    assert adapter["image"] == f"adapter-{engine}:test"
    assert adapter["env"] == [
        {"name": "ADAPTER_ENGINE_URL", "value": f"http://127.0.0.1:{engine_port}"},
        {"name": "ADAPTER_SERVED_MODEL_NAME", "value": served},
        {"name": "ADAPTER_PORT", "value": "50051"},
        {"name": "ADAPTER_METRICS_PORT", "value": "9090"},
        {"name": "ADAPTER_DRAIN_DELAY_S", "value": "2"},
        {"name": "ADAPTER_SHUTDOWN_GRACE_S", "value": "28"},
    ]
    assert adapter["readinessProbe"]["grpc"] == {"port": 50051}
    assert adapter["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert {"name": "grpc", "containerPort": 50051, "protocol": "TCP"} in adapter["ports"]
    assert adapter["securityContext"]["runAsNonRoot"] is True
    assert adapter["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("name", ["vllm-gpu", "sglang-gpu", "tgi-gpu"])
def test_gpu_backends_request_their_gpus(name: str) -> None:
    raw = example(name)
    objs = children(name)
    engine = containers(objs)["engine"]
    gpus = str(raw["spec"]["resources"]["gpus"])
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert engine["resources"]["limits"]["memory"] == raw["spec"]["resources"]["memory"]
    assert "cpu" not in engine["resources"]["limits"]  # never throttle the engine
    pod = objs.deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == raw["spec"]["tolerations"]
    mounts = {m["mountPath"]: m["name"] for m in engine["volumeMounts"]}
    template = {"/etc/switchyard/chat-template": "chat-template"}
    with_template = "chatTemplate" in raw["spec"].get("chat", {})
    assert mounts == {"/dev/shm": "dshm", "/models": "model-cache"} | (
        template if with_template else {}
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {
        "medium": "Memory",
        "sizeLimit": raw["spec"].get("shmSize", "2Gi"),
    }
    assert "adapter" not in str(engine["resources"])


def test_scheduling_and_cache_of_the_sglang_example() -> None:
    objs = children("sglang-gpu")
    pod = objs.deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["runtimeClassName"] == "nvidia"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "100Gi"}}
    assert "--tp-size" in containers(objs)["engine"]["args"]


def test_a_claimed_cache() -> None:
    pod = children("vllm-gpu").deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}


@pytest.mark.parametrize("name", ["vllm-sim", "sglang-sim", "tgi-sim"])
def test_simulated_backends_run_on_cpu_anywhere(name: str) -> None:
    objs = children(name)
    pod = objs.deployment["spec"]["template"]["spec"]
    engine = containers(objs)["engine"]
    assert engine["image"] == "enginesim:test"
    assert "gpu" not in str(engine["resources"])
    assert engine["resources"]["requests"] == {"cpu": "100m", "memory": "512Mi"}
    assert "nodeSelector" not in pod
    assert "runtimeClassName" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


def test_simulated_ignores_gpu_scheduling_of_a_gpu_spec() -> None:
    objs = children("sglang-gpu", simulated=True)
    pod = objs.deployment["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod
    assert "nodeSelector" not in pod
    assert "gpu" not in str(containers(objs)["engine"]["resources"])


@pytest.mark.parametrize("name", EXAMPLES)
def test_engine_probes_and_ports(name: str) -> None:
    engine = containers(children(name))["engine"]
    assert engine["ports"][0]["name"] == "http"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["httpGet"]["port"] == "http"
    pod = children(name).deployment["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False


def _stop_times(settings: OperatorSettings) -> tuple[int, int, int, int]:
    """(adapter drain delay, adapter grace, engine preStop sleep, pod grace) as rendered."""
    raw = example("vllm-gpu")
    spec = ModelBackendSpec.model_validate(raw["spec"])
    objs = render("x", "models", spec, settings, 1)
    pod = objs.deployment["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    env = {e["name"]: e.get("value") for e in by_name["adapter"]["env"]}
    return (
        int(env["ADAPTER_DRAIN_DELAY_S"]),
        int(env["ADAPTER_SHUTDOWN_GRACE_S"]),
        by_name["engine"]["lifecycle"]["preStop"]["sleep"]["seconds"],
        pod["terminationGracePeriodSeconds"],
    )


@pytest.mark.parametrize(("drain_s", "delay_s"), [(30, 2), (300, 5), (0, 0), (7, 7)])
def test_the_pods_stop_times_derive_from_the_drain(drain_s: int, delay_s: int) -> None:
    """Issue 15: the adapter drains within drain_s (its NOT_SERVING delay, then its grace for
    streams in flight); the engine sleeps past that and the adapter's exit; the pod's grace
    covers the engine's sleep and its own stop, so the kubelet kills nothing in flight."""
    settings = operator_settings("models", drain_s=drain_s, drain_delay_s=delay_s)
    delay, grace, prestop, pod_grace = _stop_times(settings)
    assert (delay, grace) == (delay_s, drain_s - delay_s)
    assert prestop == drain_s + ADAPTER_EXIT_S
    assert pod_grace == prestop + ENGINE_STOP_S
    assert pod_grace > delay + grace


def test_a_longer_drain_rolls_the_pods() -> None:
    raw = example("vllm-gpu")
    spec = ModelBackendSpec.model_validate(raw["spec"])
    short = render("x", "models", spec, operator_settings("models", drain_s=30), 1)
    long = render("x", "models", spec, operator_settings("models", drain_s=600), 1)
    assert short.deployment["metadata"] != long.deployment["metadata"]  # the template hash


def test_scaling_changes_only_the_replicas() -> None:
    base = children("vllm-gpu", replicas=1)
    scaled = children(
        "vllm-gpu", replicas=3, scaling={"minReplicas": 2, "maxReplicas": 8, "warmReplicas": 2}
    )
    assert base.deployment["spec"]["template"] == scaled.deployment["spec"]["template"]
    assert base.deployment["metadata"] == scaled.deployment["metadata"]
    assert scaled.deployment["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    "change",
    [
        {"model": "meta-llama/Llama-3.1-70B-Instruct"},
        {"engine": "sglang"},
        {"maxModelLen": 4096},
        {"args": ["--enforce-eager"]},
        {"image": "vllm/vllm-openai:v0.34.0"},
        {"chat": {"toolCallParser": "llama3_json", "reasoningParser": "deepseek_r1"}},
        {"chat": {"toolCallParser": "llama3_json"}},  # the chat template dropped
    ],
)
def test_serving_changes_roll_the_pods(change: dict[str, Any]) -> None:
    base = children("vllm-gpu")
    changed = children("vllm-gpu", **change)
    old = base.deployment["spec"]["template"]
    new = changed.deployment["spec"]["template"]
    assert old != new
    annotation = naming.TEMPLATE_HASH_ANNOTATION
    assert changed.deployment["metadata"]["annotations"][annotation] == template_hash(new)
    assert base.deployment["metadata"]["annotations"][annotation] != template_hash(new)
    # The selector never changes (it is immutable in a Deployment).
    assert base.deployment["spec"]["selector"] == changed.deployment["spec"]["selector"]


def test_adapter_image_overrides() -> None:
    objs = children("vllm-sim", adapter={"image": "mine/adapter:1"})
    assert containers(objs)["adapter"]["image"] == "mine/adapter:1"
    settings = operator_settings("models", adapter_images={"vllm": "reg/adapter-vllm@sha256:abc"})
    spec = ModelBackendSpec.model_validate(example("vllm-sim")["spec"])
    objs = render("demo-vllm", "models", spec, settings, 1)
    assert containers(objs)["adapter"]["image"] == "reg/adapter-vllm@sha256:abc"


KEY_REF = {"secretKeyRef": {"name": "engine-key", "key": "token"}}
#: Where each engine takes its key (verified in each engine's code, see engines.py).
ENGINE_KEY_ENV = {"vllm": "VLLM_API_KEY", "sglang": "SWITCHYARD_ENGINE_API_KEY", "tgi": "API_KEY"}


def env_refs(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom") for e in container["env"]}


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_api_key_secret_reaches_the_engine_and_the_adapter_by_reference(name: str) -> None:
    objs = children(name, apiKeySecret={"name": "engine-key", "key": "token"})
    kubernetes_validate.validate(objs.deployment, K8S_VERSION, strict=True)
    found = containers(objs)
    engine = example(name)["spec"]["engine"]
    assert env_refs(found["engine"])[ENGINE_KEY_ENV[engine]] == KEY_REF
    assert env_refs(found["adapter"])["ADAPTER_ENGINE_API_KEY"] == KEY_REF
    args = found["engine"]["args"]
    if engine == "sglang":  # a flag only: the kubelet expands the variable into it
        at = args.index("--api-key")
        assert args[at + 1] == "$(SWITCHYARD_ENGINE_API_KEY)"
    else:  # the engine reads its own variable: no flag at all
        assert "--api-key" not in args
    # Only references: no value of any key-carrying variable is in the Deployment.
    for container in found.values():
        for item in container["env"]:
            if "KEY" in item["name"]:
                assert "value" not in item, item


@pytest.mark.parametrize("name", EXAMPLES)
def test_without_an_api_key_secret_there_is_no_key(name: str) -> None:
    found = containers(children(name, apiKeySecret=None))
    for container in found.values():
        assert not [e for e in container["env"] if "API_KEY" in e["name"]]
        assert "--api-key" not in container.get("args", [])


def test_a_new_api_key_secret_rolls_the_pods() -> None:
    before = children("vllm-sim")
    after = children("vllm-sim", apiKeySecret={"name": "engine-key", "key": "token"})
    hash_of = naming.TEMPLATE_HASH_ANNOTATION
    assert (
        before.deployment["metadata"]["annotations"][hash_of]
        != after.deployment["metadata"]["annotations"][hash_of]
    )
