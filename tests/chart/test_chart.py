"""The chart, rendered by the real Helm library: lint, install into an emulated cluster for
the default, local and GPU values, every object valid for Kubernetes 1.33, hardened pods,
least-privilege RBAC, images that skaffold builds, values checked by values.schema.json.

Helm runs in a Python 3.12 subprocess (`tests/chart/render.py` in `.venv-chart`, made by
`make chart-env`); everything is asserted here.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from switchyard.edge.auth.secret import VERBS as KEYS_SECRET_VERBS
from switchyard.edge.settings import EdgeSettings
from switchyard.engines import ENGINES
from switchyard.operator import rbac
from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.engines import engine_args
from switchyard.operator.settings import OperatorSettings
from tests.operator.schema import validation_errors
from tests.support.workspace import CHART, ROOT, skaffold, skaffold_artifacts, template_var

K8S_VERSION = "1.33.0"
NAMESPACE = "switchyard-test"
CRD = CHART / "crds" / "modelbackends.switchyard.dev.yaml"
EXAMPLES = ROOT / "services" / "operator" / "examples"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
#: The fake references skaffold would pass for each built image.
BUILT = {image: f"registry.test/{image}:dev@sha256:{'0' * 64}" for image in skaffold_artifacts()}


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / f"values-{name}.yaml").read_text())
    return loaded


def skaffold_values() -> dict[str, Any]:
    """The values skaffold's setValueTemplates give, with each template filled in."""
    (release,) = skaffold()["deploy"]["helm"]["releases"]
    filled: dict[str, Any] = {}
    by_var = {template_var(image): ref for image, ref in BUILT.items()}
    for key, template in release["setValueTemplates"].items():
        var = re.search(r"\.(\w+)\}\}", template)
        assert var
        node = filled
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = by_var[var.group(1)]
    return filled


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


SEED_KEY = {"name": "ops", "tenant": "platform", "sha256": "1" * 64, "role": "admin"}
#: The keys Secret's data as the admin API left it between install and upgrade.
LIVE_KEYS = "keys:\n  - {name: made-by-api, tenant: t, sha256: '" + "2" * 64 + "', models: ['*']}\n"
GOOD = {
    "default": {},
    "local": values_file("local"),
    "gpu": values_file("gpu"),
    "skaffold-local": merge(values_file("local"), skaffold_values()),
    "skaffold-gpu": merge(values_file("gpu"), skaffold_values()),
    "namespaced": {
        "edge": {"routes": {"namespace": "team-a"}},
        "operator": {"namespaces": ["team-a", "team-b"], "peering": "switchyard"},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "single-replica": {
        "edge": {"replicas": 1, "keys": {"existingSecret": "my-keys"}},
        "redis": {"enabled": False},
    },
    "external-redis": {
        "edge": {"autoscaling": {"enabled": True}, "rateLimit": {"existingSecret": "redis"}},
        "redis": {"enabled": False},
    },
    # Every request setting, and a cache in each process (a bare YAML `off` is false).
    "request-settings": {
        "edge": {
            "limits": {"holdMaxPerModel": 8, "holdTimeoutS": 600},
            "maxN": 4,
            "maxImages": 2,
            "maxImageBytes": 123456789,
            "maxEmbeddingInputs": 512,
            "imageUrlHosts": ["images.example.com", "cdn.example.org"],
            "cache": {
                "mode": "memory",
                "maxBytes": 268435456,
                "maxEntryBytes": 65536,
                "ttlSeconds": 600,
            },
        },
    },
    "cache-off-as-yaml-false": {"edge": {"cache": {"mode": False}}},
    # The keys read, watched and written through the API server (the admin API).
    "keys-in-secret": {"edge": {"keys": {"source": "secret", "entries": [SEED_KEY]}}},
    "keys-in-own-secret": {"edge": {"keys": {"source": "secret", "existingSecret": "my-keys"}}},
}
BAD = {
    "wrong-type": {"edge": {"replicas": "two"}},
    "unknown-top-level-key": {"edgee": {"replicas": 2}},
    "unknown-second-level-key": {"edge": {"replica": 2}},
    "wrong-enum": {"images": {"pullPolicy": "Sometimes"}},
    "key-not-hash": {
        "edge": {
            "keys": {
                "entries": [{"name": "a", "tenant": "t", "sha256": "sy-plain-key", "models": ["*"]}]
            }
        }
    },
    "unshared-limits": {"redis": {"enabled": False}},  # two replicas, in-memory limits
    "wrong-cache-mode": {"edge": {"cache": {"mode": "disk"}}},
    "wrong-keys-source": {"edge": {"keys": {"source": "vault"}}},
    "tiny-cache": {"edge": {"cache": {"mode": "memory", "maxBytes": 10}}},
    # One replica, in-memory limits: no Redis for the cache.
    "redis-cache-without-redis": {
        "edge": {"replicas": 1, "cache": {"mode": "redis"}},
        "redis": {"enabled": False},
    },
}
#: The BAD cases the chart's own checks refuse (the schema accepts them).
REFUSED_BY_THE_CHART = {"unshared-limits", "redis-cache-without-redis"}
RENDERED_CASES = ("default", "local", "gpu")
#: Cases upgraded after the install, with these values (helm upgrade).
UPGRADES = {
    # A key added (the README's way), and a backend's spec changed in the values.
    "local": merge(
        values_file("local"),
        {
            "edge": {
                "keys": {
                    "entries": [{"name": "me", "tenant": "t", "sha256": "0" * 64, "models": ["*"]}]
                }
            },
            "backends": [
                {**b, "spec": {**b["spec"], "maxModelLen": 2048}}
                for b in values_file("local")["backends"]
            ],
        },
    ),
    # New entries in the values: they must not overwrite what the admin API wrote.
    "keys-in-secret": {
        "edge": {"keys": {"source": "secret", "entries": [{**SEED_KEY, "name": "other"}]}}
    },
}
#: Secrets changed between a case's install and its upgrade: {name, data}.
LIVE_DATA = {
    "keys-in-secret": {
        "name": "switchyard-edge-keys",
        "data": {"keys.yaml": base64.b64encode(LIVE_KEYS.encode()).decode()},
    }
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Lint and install every case with the real Helm (one Python 3.12 subprocess)."""
    python = Path(
        os.environ.get("SWITCHYARD_CHART_PYTHON") or ROOT / ".venv-chart" / "bin" / "python"
    )
    if not python.exists():
        pytest.fail(
            f"{python} is missing: the chart tests need the Helm environment (Python 3.12, "
            "helm-sdkpy). Run `make chart-env` (make test does)."
        )
    workdir = tmp_path_factory.mktemp("helm")
    cases = [
        {"name": name, "namespace": NAMESPACE, "values": values}
        | ({"upgrade": UPGRADES[name]} if name in UPGRADES else {})
        | ({"live_data": LIVE_DATA[name]} if name in LIVE_DATA else {})
        for name, values in {**GOOD, **BAD}.items()
    ]
    (workdir / "cases.json").write_text(json.dumps({"chart": str(CHART), "cases": cases}))
    result = subprocess.run(
        [
            str(python),
            "-m",
            "tests.chart.render",
            str(workdir / "cases.json"),
            str(workdir / "out.json"),
        ],
        cwd=ROOT,
        env={**os.environ, "HELM_DRIVER": "memory", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"helm render failed:\n{result.stdout}\n{result.stderr}"
    out: dict[str, Any] = json.loads((workdir / "out.json").read_text())
    return out


def manifest(helm: dict[str, Any], case: str) -> list[dict[str, Any]]:
    result = helm["cases"][case]
    assert "error" not in result, f"{case}: {result['error']}"
    objects: list[dict[str, Any]] = result["manifest"]
    assert objects
    return objects


def hooks(helm: dict[str, Any], case: str) -> list[dict[str, Any]]:
    """The case's hook objects, each with its "events" and "delete_policies"."""
    manifest(helm, case)  # the install succeeded
    found: list[dict[str, Any]] = helm["cases"][case]["hooks"]
    return found


def backends(helm: dict[str, Any], case: str) -> list[dict[str, Any]]:
    """The ModelBackends the chart makes (post-install hooks)."""
    return [h["object"] for h in hooks(helm, case) if h["object"]["kind"] == "ModelBackend"]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = find(objects, kind, name)
    return found


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def check_model_backend(obj: dict[str, Any]) -> None:
    """A ModelBackend against the CRD's own schema (what the API server checks, less CEL)."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, crd_schema())


# -- lint and render ----------------------------------------------------------------------


def test_lints_clean(helm: dict[str, Any]) -> None:
    lint = helm["lint"]
    assert lint["TotalChartsLinted"] == 1
    assert not lint["Errors"]
    # Helm's severities: 1 info (e.g. "icon is recommended"), 2 warning, 3 error.
    problems = [m for m in lint["Messages"] or [] if m["Severity"] >= 2]
    assert not problems


@pytest.mark.parametrize("case", sorted(GOOD))
def test_renders_valid_kubernetes_objects(helm: dict[str, Any], case: str) -> None:
    for obj in manifest(helm, case) + [h["object"] for h in hooks(helm, case)]:
        group = obj["apiVersion"].rpartition("/")[0]
        what = f"{case}: {obj['kind']} {obj['metadata']['name']}"
        if group == "switchyard.dev":
            check_model_backend(obj)
        elif group == "monitoring.coreos.com":
            # Prometheus Operator kinds: kubernetes-validate has no schema for them.
            assert obj["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule"), what
            assert obj["spec"], what
        else:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{what}: {exc.message} at {list(exc.path)}")


def test_the_crd_is_valid_and_the_only_one() -> None:
    assert [p.name for p in (CHART / "crds").iterdir()] == [CRD.name]
    kubernetes_validate.validate(yaml.safe_load(CRD.read_text()), K8S_VERSION, strict=True)


def test_example_model_backends_fit_the_crd() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                check_model_backend(doc)


def test_no_namespace_is_hard_coded(helm: dict[str, Any]) -> None:
    allowed = {"team-a", "team-b", "models"}  # named by the cases' values
    for case in GOOD:
        for obj in manifest(helm, case):
            namespace = obj["metadata"].get("namespace")
            assert namespace is None or namespace in allowed, f"{case}: {obj['metadata']}"
            for subject in obj.get("subjects", []):
                assert subject["namespace"] == NAMESPACE


# -- hardening ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(GOOD))
def test_pods_are_hardened(helm: dict[str, Any], case: str) -> None:
    pods = dict(pod_specs(manifest(helm, case)))
    assert {"switchyard-edge", "switchyard-operator"} <= set(pods)
    for name, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not pod.get("hostNetwork"), name
        assert not pod.get("hostPID"), name
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security.get("privileged", False) is False, where
            requests = container["resources"]["requests"]
            assert requests.get("cpu"), where
            assert requests.get("memory"), where
            assert container["resources"]["limits"].get("memory"), where


def test_operator_runs_alone(helm: dict[str, Any]) -> None:
    for case in RENDERED_CASES:
        deployment = one(manifest(helm, case), "Deployment", "switchyard-operator")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# -- RBAC ---------------------------------------------------------------------------------


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_needs(*, peering: bool) -> set[tuple[str, str, str]]:
    rules = rbac.RULES + (rbac.PEERING_RULES if peering else ())
    return triples([rule.as_dict() for rule in rules])


def roles_bound_to(objects: list[dict[str, Any]], account: str) -> list[dict[str, Any]]:
    """The (Cluster)Roles a ServiceAccount of the release is bound to."""
    bound = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        (role,) = [
            o
            for o in objects
            if o["kind"] == ref["kind"]
            and o["metadata"]["name"] == ref["name"]
            and o["metadata"].get("namespace") == binding["metadata"].get("namespace")
        ]
        bound.append(role)
    return bound


def test_operator_rbac_is_exactly_what_it_uses(helm: dict[str, Any]) -> None:
    """switchyard.operator.rbac.RULES lists every API call the handlers make (its own tests
    check the calls against it); kopf's needs are in it too: events/create for the Events it
    posts. kopf's CRD and namespace scanning is off and it runs standalone, so no
    customresourcedefinitions, namespaces or kopf.dev peering grants, unless peering is set."""
    for case in RENDERED_CASES:
        objects = manifest(helm, case)
        roles = roles_bound_to(objects, "switchyard-operator")
        assert roles, case
        for role in roles:
            assert triples(role["rules"]) == operator_needs(peering=False), case
        namespaces = (
            values_file(case).get("operator", {}).get("namespaces") if case != "default" else None
        )
        if namespaces:
            assert {r["kind"] for r in roles} == {"Role"}
            assert {r["metadata"]["namespace"] for r in roles} == set(namespaces)
        else:
            assert [r["kind"] for r in roles] == ["ClusterRole"]

    roles = roles_bound_to(manifest(helm, "namespaced"), "switchyard-operator")
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for role in roles:
        assert role["kind"] == "Role"
        assert triples(role["rules"]) == operator_needs(peering=True)


def test_edge_rbac_reads_and_only_signals_demand(helm: dict[str, Any]) -> None:
    # services/edge/.../kubernetes_source.py: get/list/watch/patch modelbackends (patch for
    # the demand annotation), list/watch endpointslices.
    expected = {
        ("switchyard.dev", "modelbackends", verb) for verb in ("get", "list", "watch", "patch")
    } | {("discovery.k8s.io", "endpointslices", verb) for verb in ("list", "watch")}
    for case in (*RENDERED_CASES, "namespaced"):
        roles = roles_bound_to(manifest(helm, case), "switchyard-edge")
        assert len(roles) == 1
        granted = triples(roles[0]["rules"])
        assert granted == expected
        writes = {t for t in granted if t[2] not in ("get", "list", "watch")}
        assert writes == {("switchyard.dev", "modelbackends", "patch")}
    (role,) = roles_bound_to(manifest(helm, "namespaced"), "switchyard-edge")
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "team-a")


def test_edge_keys_in_a_secret_through_the_api_server(helm: dict[str, Any]) -> None:
    """edge.keys.source=secret: no mount; EDGE_KEYS_SECRET; a Role on that one Secret with
    exactly the verbs the edge uses (auth/secret.py VERBS); the Secret kept by Helm, its
    live data surviving an upgrade with other entries (lookup)."""
    for case, secret_name in (
        ("keys-in-secret", "switchyard-edge-keys"),
        ("keys-in-own-secret", "my-keys"),
    ):
        objects = manifest(helm, case)
        pod = one(objects, "Deployment", "switchyard-edge")["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        assert "EDGE_KEYS_FILE" not in env
        assert (env["EDGE_KEYS_SECRET"], env["EDGE_KEYS_SECRET_KEY"]) == (secret_name, "keys.yaml")
        assert env["EDGE_KEYS_SECRET_NAMESPACE"] == NAMESPACE
        assert all(v["name"] != "keys" for v in pod["volumes"])
        assert all(m["name"] != "keys" for m in pod["containers"][0]["volumeMounts"])
        roles = roles_bound_to(objects, "switchyard-edge")
        (keys_role,) = [r for r in roles if r["kind"] == "Role"]
        assert "namespace" not in keys_role["metadata"]  # the release's, the Secret's
        (rule,) = keys_role["rules"]
        assert rule == {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret_name],
            "verbs": list(KEYS_SECRET_VERBS),
        }
        others = [r for r in roles if r is not keys_role]
        assert all(("", "secrets") not in {t[:2] for t in triples(r["rules"])} for r in others)
    # The file source (every other case): no access to Secrets at all.
    for case in (*RENDERED_CASES, "namespaced", "single-replica"):
        for role in roles_bound_to(manifest(helm, case), "switchyard-edge"):
            assert all(t[1] != "secrets" for t in triples(role["rules"])), case

    secret = one(manifest(helm, "keys-in-secret"), "Secret", "switchyard-edge-keys")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert yaml.safe_load(secret["stringData"]["keys.yaml"]) == {"keys": [SEED_KEY]}
    assert not find(manifest(helm, "keys-in-own-secret"), "Secret", "my-keys")
    (after,) = [
        s
        for s in helm["cases"]["keys-in-secret"]["upgraded_secrets"]
        if s["metadata"]["name"] == "switchyard-edge-keys"
    ]
    assert base64.b64decode(after["data"]["keys.yaml"]).decode() == LIVE_KEYS
    assert "other" not in json.dumps(after)


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(GOOD))
def test_edge_and_operator_settings_load(
    helm: dict[str, Any], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the chart gives each service is one its settings class accepts."""
    objects = manifest(helm, case)
    for deployment, prefix, settings in (
        ("switchyard-edge", "EDGE_", EdgeSettings),
        ("switchyard-operator", "OPERATOR_", OperatorSettings),
    ):
        (container,) = one(objects, "Deployment", deployment)["spec"]["template"]["spec"][
            "containers"
        ]
        for name in list(os.environ):
            if name.startswith(prefix):
                monkeypatch.delenv(name)
        env = env_of(container)
        for item in container["env"]:
            if item["name"] == "EDGE_REDIS_URL":  # from a Secret
                env["EDGE_REDIS_URL"] = "redis://redis.test:6379/0"
        known = {prefix + field.upper() for field in settings.model_fields}
        assert {k for k in env if k.startswith(prefix)} <= known, deployment
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings()  # raises on any bad value


def test_edge_serves_routes_from_the_cluster_with_keys_mounted(helm: dict[str, Any]) -> None:
    objects = manifest(helm, "default")
    pod = one(objects, "Deployment", "switchyard-edge")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["EDGE_ROUTES_SOURCE"] == "kubernetes"
    assert env["EDGE_RATE_LIMIT_BACKEND"] == "redis"
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    secret = one(objects, "Secret", keys["secret"]["secretName"])
    assert yaml.safe_load(secret["stringData"]["keys.yaml"]) == {"keys": []}
    assert env["EDGE_KEYS_FILE"].startswith(pod["containers"][0]["volumeMounts"][0]["mountPath"])

    single = manifest(helm, "single-replica")
    pod = one(single, "Deployment", "switchyard-edge")["spec"]["template"]["spec"]
    assert env_of(pod["containers"][0])["EDGE_RATE_LIMIT_BACKEND"] == "memory"
    assert not find(single, "Deployment", "switchyard-redis")
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    assert keys["secret"]["secretName"] == "my-keys"
    assert not find(single, "Secret")

    autoscaled = manifest(helm, "external-redis")
    assert "replicas" not in one(autoscaled, "Deployment", "switchyard-edge")["spec"]
    assert one(autoscaled, "HorizontalPodAutoscaler", "switchyard-edge")


def test_collector_gets_every_service_s_traces(helm: dict[str, Any]) -> None:
    for case, exporters in (("local", ["debug"]), ("gpu", ["otlp/traces", "debug"])):
        objects = manifest(helm, case)
        config = yaml.safe_load(
            one(objects, "ConfigMap", "switchyard-otel-collector")["data"]["config.yaml"]
        )
        assert config["service"]["pipelines"]["traces"]["exporters"] == exporters
        assert set(exporters) <= set(config["exporters"])
        endpoint = "http://switchyard-otel-collector.switchyard-test.svc:4317"
        edge = one(objects, "Deployment", "switchyard-edge")["spec"]["template"]["spec"]
        operator = one(objects, "Deployment", "switchyard-operator")["spec"]["template"]["spec"]
        assert env_of(edge["containers"][0])["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
        operator_env = env_of(operator["containers"][0])
        assert operator_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
        # ... and the operator hands it on to every adapter sidecar it creates.
        adapter_env = json.loads(operator_env["OPERATOR_ADAPTER_ENV"])
        assert adapter_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint


def test_monitoring_objects_use_the_bundle(helm: dict[str, Any]) -> None:
    objects = manifest(helm, "gpu")
    rule = one(objects, "PrometheusRule", "switchyard")
    bundle = yaml.safe_load((CHART / "files" / "prometheus-alerts.yaml").read_text())
    assert rule["spec"] == bundle
    board = one(objects, "ConfigMap", "switchyard-dashboard")
    assert json.loads(board["data"]["switchyard.json"])["uid"] == "switchyard-overview"
    monitor = one(objects, "ServiceMonitor", "switchyard-edge")
    service = one(objects, "Service", "switchyard-edge-metrics")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    pods = one(objects, "PodMonitor", "switchyard-adapters")
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_the_edge_s_metrics_have_their_own_port_and_service(helm: dict[str, Any]) -> None:
    """Scraped through a ClusterIP Service of their own; the public Service has no metrics."""
    objects = manifest(helm, "gpu")
    (container,) = one(objects, "Deployment", "switchyard-edge")["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env_of(container)["EDGE_METRICS_PORT"]) == ports["metrics"] != ports["http"]
    assert env_of(container)["EDGE_DOCS"] == "false"
    public = one(objects, "Service", "switchyard-edge")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    metrics = one(objects, "Service", "switchyard-edge-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]
    selector = one(objects, "ServiceMonitor", "switchyard-edge")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    assert not selector.items() <= public["metadata"]["labels"].items()


def test_gpu_knobs_reach_the_backends(helm: dict[str, Any]) -> None:
    gpu = values_file("gpu")["gpu"]
    (backend,) = backends(helm, "gpu")
    spec = backend["spec"]
    assert spec["resources"]["gpuResource"] == gpu["resourceName"]
    assert spec["runtimeClassName"] == gpu["runtimeClassName"]
    assert spec["nodeSelector"] == gpu["nodeSelector"]
    assert spec["tolerations"] == gpu["tolerations"]
    local = backends(helm, "local")
    assert {b["spec"]["engine"] for b in local} == {"vllm", "sglang", "tgi"}
    assert all(b["spec"]["simulated"] for b in local)


# -- images -------------------------------------------------------------------------------


def switchyard_images(objects: list[dict[str, Any]]) -> set[str]:
    """Every image of Switchyard's own the release runs or makes the operator run."""
    third_party = set()
    found = set()
    for _, pod in pod_specs(objects):
        for container in pod["containers"]:
            if container["name"] in ("redis", "otel-collector"):
                third_party.add(container["image"])
                continue
            found.add(container["image"])
            env = env_of(container)
            if "OPERATOR_ADAPTER_IMAGES" in env:
                found.update(json.loads(env["OPERATOR_ADAPTER_IMAGES"]).values())
                found.add(env["OPERATOR_SIMULATOR_IMAGE"])
    return found


@pytest.mark.parametrize("case", ["skaffold-local", "skaffold-gpu"])
def test_every_switchyard_image_is_one_skaffold_builds(helm: dict[str, Any], case: str) -> None:
    assert switchyard_images(manifest(helm, case)) == set(BUILT.values())


def test_default_images_are_named_like_the_artifacts(helm: dict[str, Any]) -> None:
    images = switchyard_images(manifest(helm, "default"))
    names = {re.fullmatch(r"ghcr\.io/switchyard/([a-z-]+):0\.1\.0", i) for i in images}
    assert None not in names
    assert {m.group(1) for m in names if m} == set(skaffold_artifacts())


def test_the_chart_pins_each_registered_engine_and_its_adapter() -> None:
    """Adding an engine to the registry fails here until the chart and skaffold know it."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["engineImages"] == {k.name: k.image for k in ENGINES.values()}
    for kind in ENGINES.values():
        assert f"adapter{kind.name.title()}" in values["images"], kind.name
        assert kind.adapter_component in skaffold_artifacts(), kind.name


# -- values.schema.json -------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(set(BAD) - REFUSED_BY_THE_CHART))
def test_schema_rejects_bad_values(helm: dict[str, Any], case: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(BAD[case], SCHEMA)
    error = helm["cases"][case].get("error", "")
    assert "schema" in error.lower(), f"helm accepted {case}: {error or 'no error'}"


def test_schema_accepts_the_example_values() -> None:
    for values in (GOOD["local"], GOOD["gpu"], yaml.safe_load((CHART / "values.yaml").read_text())):
        jsonschema.validate(values, SCHEMA)
    for level in (SCHEMA, *SCHEMA["properties"].values()):
        if level.get("type") == "object":
            assert level["additionalProperties"] is False


def test_several_edges_without_shared_limits_are_refused(helm: dict[str, Any]) -> None:
    assert "shared rate limits" in helm["cases"]["unshared-limits"].get("error", "")


def test_a_redis_cache_without_a_redis_is_refused(helm: dict[str, Any]) -> None:
    jsonschema.validate(BAD["redis-cache-without-redis"], SCHEMA)  # the schema cannot tell
    error = helm["cases"]["redis-cache-without-redis"].get("error", "")
    assert "edge.cache.mode=redis" in error
    assert "redis.enabled=true" in error  # how to give it one


def edge_env(helm: dict[str, Any], case: str) -> dict[str, str]:
    pod = one(manifest(helm, case), "Deployment", "switchyard-edge")["spec"]["template"]
    return env_of(pod["spec"]["containers"][0])


def test_request_and_cache_settings_reach_the_edge(helm: dict[str, Any]) -> None:
    env = edge_env(helm, "request-settings")
    expected = {
        "EDGE_MAX_N": "4",
        "EDGE_MAX_IMAGES": "2",
        "EDGE_MAX_IMAGE_BYTES": "123456789",
        "EDGE_MAX_EMBEDDING_INPUTS": "512",
        "EDGE_IMAGE_URL_HOSTS": "images.example.com,cdn.example.org",
        "EDGE_CACHE": "memory",
        "EDGE_CACHE_MAX_BYTES": "268435456",
        "EDGE_CACHE_MAX_ENTRY_BYTES": "65536",
        "EDGE_CACHE_TTL_S": "600",
        "EDGE_HOLD_MAX_PER_MODEL": "8",
        "EDGE_HOLD_TIMEOUT_S": "600",
    }
    assert {name: env.get(name) for name in expected} == expected
    assert "EDGE_CACHE_REDIS_URL" not in env


@pytest.mark.parametrize("case", ["default", "cache-off-as-yaml-false"])
def test_by_default_the_edge_s_settings_are_its_own_defaults(
    helm: dict[str, Any], case: str
) -> None:
    env = edge_env(helm, case)
    defaults = EdgeSettings.model_fields
    for name, field in (
        ("EDGE_MAX_N", "max_n"),
        ("EDGE_MAX_IMAGES", "max_images"),
        ("EDGE_MAX_IMAGE_BYTES", "max_image_bytes"),
        ("EDGE_MAX_EMBEDDING_INPUTS", "max_embedding_inputs"),
        ("EDGE_CACHE", "cache"),
        ("EDGE_CACHE_MAX_BYTES", "cache_max_bytes"),
        ("EDGE_CACHE_MAX_ENTRY_BYTES", "cache_max_entry_bytes"),
        ("EDGE_HOLD_MAX_PER_MODEL", "hold_max_per_model"),
    ):
        assert env[name] == str(defaults[field].default), name
    assert float(env["EDGE_CACHE_TTL_S"]) == defaults["cache_ttl_s"].default
    assert float(env["EDGE_HOLD_TIMEOUT_S"]) == defaults["hold_timeout_s"].default
    assert "EDGE_IMAGE_URL_HOSTS" not in env  # none: only images sent inline


def test_the_local_edges_share_their_cache_in_the_chart_s_redis(helm: dict[str, Any]) -> None:
    env = edge_env(helm, "local")
    assert env["EDGE_CACHE"] == "redis"
    (redis_url,) = [
        item
        for item in one(manifest(helm, "local"), "Deployment", "switchyard-edge")["spec"][
            "template"
        ]["spec"]["containers"][0]["env"]
        if item["name"] == "EDGE_REDIS_URL"
    ]
    assert "secretKeyRef" in redis_url["valueFrom"]


def test_notes_say_how_to_get_a_key_and_call(helm: dict[str, Any]) -> None:
    notes = helm["cases"]["default"]["notes"]
    assert "sha256sum" in notes
    assert "edge.keys.entries" in notes
    assert "kind: ModelBackend" in notes
    assert "/v1/chat/completions" in notes
    assert "task: embed" in notes
    assert "/v1/embeddings" in notes
    assert "port-forward svc/switchyard-edge" in notes


# -- the chart's own ModelBackends ---------------------------------------------------------


@pytest.mark.parametrize("case", ["local", "gpu"])
def test_the_chart_s_backends_are_made_after_the_release_by_a_post_install_hook(
    helm: dict[str, Any], case: str
) -> None:
    """Issue 10: in one real install in five, Helm mapped the release's ModelBackends before
    its discovery saw the CRD it had just created ("no matches for kind ModelBackend"). As a
    post-install hook they are created last, once the release's resources are applied."""
    assert not find(manifest(helm, case), "ModelBackend")
    made = [h for h in hooks(helm, case) if h["object"]["kind"] == "ModelBackend"]
    assert {b["name"] for b in values_file(case)["backends"]} == {
        h["object"]["metadata"]["name"] for h in made
    }
    for hook in made:
        assert hook["events"] == ["post-install"]
        assert hook["delete_policies"] == ["before-hook-creation"]
    # The hooks ran: the emulated cluster holds them after the install.
    assert sorted(b["metadata"]["name"] for b in helm["cases"][case]["backends"]) == sorted(
        h["object"]["metadata"]["name"] for h in made
    )


def test_an_upgrade_leaves_the_chart_s_backends_alone(helm: dict[str, Any]) -> None:
    """Not post-upgrade: re-running the hook deletes and recreates each backend (its
    Deployment with it), which would restart every model on every `helm upgrade`. So once
    installed the backends are the user's: a changed `backends` value is not applied."""
    before = {b["metadata"]["name"]: b for b in helm["cases"]["local"]["backends"]}
    after = {b["metadata"]["name"]: b for b in helm["cases"]["local"]["upgraded_backends"]}
    assert after == before


def test_the_operator_judges_names_by_the_edge_s_namespace(helm: dict[str, Any]) -> None:
    for case, expected in (("default", ""), ("namespaced", "team-a")):
        pod = one(manifest(helm, case), "Deployment", "switchyard-operator")["spec"]["template"]
        assert env_of(pod["spec"]["containers"][0])["OPERATOR_SERVED_NAMESPACES"] == expected


def test_fail_open_shares_each_limit_among_the_processes_that_can_run(
    helm: dict[str, Any],
) -> None:
    """While Redis is away each edge process keeps 1/N of each limit: N is every process
    that may run (replicas x workers; the autoscaler's maximum when it is on)."""
    for case, processes in (("default", "2"), ("external-redis", "10")):
        pod = one(manifest(helm, case), "Deployment", "switchyard-edge")["spec"]["template"]
        env = env_of(pod["spec"]["containers"][0])
        assert env["EDGE_RATE_LIMIT_FALLBACK_PROCESSES"] == processes, case
    # In-memory limits: one process, nothing to share.
    pod = one(manifest(helm, "single-replica"), "Deployment", "switchyard-edge")["spec"]
    assert "EDGE_RATE_LIMIT_FALLBACK_PROCESSES" not in env_of(
        pod["template"]["spec"]["containers"][0]
    )


@pytest.mark.parametrize("case", ["local", "gpu"])
def test_the_chart_s_backends_pass_the_crd_s_rules(helm: dict[str, Any], case: str) -> None:
    """The schema and the CEL rules, as the API server checks them (what jsonschema alone
    misses: e.g. a tool-call parser on TGI)."""
    for obj in backends(helm, case):
        assert validation_errors(obj) == [], obj["metadata"]["name"]


def test_the_local_demo_backends_serve_tools_reasoning_and_images(helm: dict[str, Any]) -> None:
    """As `make run`'s: every simulated chat model takes images; vLLM and SGLang get a
    tool-call and a reasoning parser (TGI serves tools without one, and has no reasoning
    parser)."""
    for obj in backends(helm, "local"):
        spec = ModelBackendSpec.model_validate(obj["spec"])
        if spec.task == "embed":
            continue
        args = engine_args(spec, obj["metadata"]["name"])
        assert "--sim-multimodal" in args, spec.engine
        has_parsers = {"--tool-call-parser", "--reasoning-parser"} <= set(args)
        assert has_parsers is (spec.engine != "tgi"), spec.engine


def test_the_gpu_example_serves_tools() -> None:
    (backend,) = values_file("gpu")["backends"]
    spec = ModelBackendSpec.model_validate(backend["spec"])
    args = engine_args(spec, backend["name"])
    assert args[args.index("--tool-call-parser") - 1] == "--enable-auto-tool-choice"


def test_the_local_demo_serves_an_embedding_model_as_make_run_does(helm: dict[str, Any]) -> None:
    (obj,) = [b for b in backends(helm, "local") if b["spec"].get("task") == "embed"]
    assert obj["metadata"]["name"] == "demo-embed"
    spec = ModelBackendSpec.model_validate(obj["spec"])
    args = engine_args(spec, obj["metadata"]["name"])
    assert spec.engine == "vllm"
    assert args[args.index("--runner") + 1] == "pooling"
    assert json.loads(args[args.index("--hf-overrides") + 1]) == {"is_matryoshka": True}
