"""The CRD: generated from the models, committed in the chart, accepted by the API server, and
enforcing the same rules as the models.

The committed YAML must equal the generator's output (`make crd` after changing `api.py`).
`tests.operator.crd_validation` checks it as the API server checks a CRD on create
(structural schema, defaults validated and their CEL rules run without nested defaulting,
list types, rules, printer columns); `tests.operator.schema` checks objects as the server
checks a ModelBackend (defaulting, schema, CEL by cel-python).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from switchyard.engines import ENGINES as ENGINE_KINDS
from switchyard.engines import GENERATION_ONLY
from switchyard.operator import api
from switchyard.operator.crd import CRD_PATH, crd_manifest, crd_yaml
from tests.operator.cases import INVALID, spec
from tests.operator.cel import CelCompileError, compile_rule, evaluate
from tests.operator.crd_validation import crd_errors
from tests.operator.harness import EXAMPLES, backend, example
from tests.operator.schema import (
    BLOCKED,
    ROOT,
    Schema,
    apply_defaults,
    committed_crd,
    defaulted,
    open_api_schema,
    validation_errors,
)

#: The CRD as committed before issue 10: a real API server refused it (`scaling.default: {}`).
CRD_BEFORE_ISSUE_10 = Path(__file__).parent / "fixtures" / "modelbackends-before-issue-10.yaml"


def test_committed_crd_is_up_to_date() -> None:
    committed = (ROOT / CRD_PATH).read_text()
    assert committed == crd_yaml(), (
        f"{CRD_PATH} is stale: regenerate it with `make crd` "
        f"(uv run python -m switchyard.operator crd > {CRD_PATH})"
    )


def test_generated_manifest_is_what_is_committed() -> None:
    assert committed_crd() == crd_manifest()


def test_crd_identity() -> None:
    crd = committed_crd()
    assert crd["metadata"]["name"] == "modelbackends.switchyard.dev"
    spec_ = crd["spec"]
    assert spec_["group"] == "switchyard.dev"
    assert spec_["scope"] == "Namespaced"
    assert spec_["names"] == {
        "kind": "ModelBackend",
        "listKind": "ModelBackendList",
        "plural": "modelbackends",
        "singular": "modelbackend",
        "shortNames": ["mb"],
        "categories": ["switchyard"],
    }
    (version,) = spec_["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.scaling.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Engine"] == ".spec.engine"
    assert columns["Model"] == ".spec.model"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Desired"] == ".status.desiredReplicas"
    assert columns["Warm"] == ".status.warmReplicas"
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"


# -- the CRD, as the API server checks it on create ---------------------------------------


def test_the_api_server_accepts_the_crd() -> None:
    assert crd_errors(committed_crd()) == []


def test_the_crd_before_issue_10_is_refused_as_the_api_server_refused_it() -> None:
    """The words a real v1.32 API server used for the chart's CRD, from issue 10."""
    errors = crd_errors(yaml.safe_load(CRD_BEFORE_ISSUE_10.read_text()))
    where = "spec.validation.openAPIV3Schema.properties[spec].properties[scaling].default"
    assert errors == [
        f'{where}: Invalid value: "object": no such key: minReplicas evaluating rule: '
        "minReplicas must not exceed maxReplicas",
        f'{where}: Invalid value: "object": no such key: warmReplicas evaluating rule: '
        "warmReplicas must not exceed maxReplicas",
    ]


def _spec_props(schema: Schema) -> dict[str, Any]:
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return props


#: One change per class of refusal; each must make the committed CRD unacceptable.
BROKEN: dict[str, tuple[Callable[[Schema], None], str]] = {
    "a node without a type": (
        lambda s: _spec_props(s)["model"].pop("type"),
        "properties[model].type: Required value: must not be empty for specified object fields",
    ),
    "array without items": (
        lambda s: _spec_props(s)["args"].pop("items"),
        "properties[args].items: Required value: must be specified",
    ),
    "additionalProperties beside properties": (
        lambda s: _spec_props(s)["scaling"].update(additionalProperties=False),
        "additionalProperties and properties are mutual exclusive",
    ),
    "metadata constrained beyond name": (
        lambda s: s["properties"]["metadata"].update(
            properties={"labels": {"type": "object", "maxProperties": 3}}
        ),
        "must not specify anything other than name and generateName",
    ),
    "a type inside anyOf": (
        lambda s: _spec_props(s)["model"].update(anyOf=[{"type": "string", "minLength": 2}]),
        "properties[model].anyOf[0].type: Forbidden: must be empty to be structural",
    ),
    "a field only anyOf knows": (
        lambda s: _spec_props(s)["scaling"].update(
            anyOf=[{"properties": {"maxReplica": {"minimum": 1}}}]
        ),
        "properties[scaling].properties[maxReplica]: Required value: because it is defined in",
    ),
    "a default in the top-level metadata": (
        lambda s: s["properties"]["metadata"].update(default={}),
        "properties[metadata].default: Forbidden: must not be set in top-level metadata",
    ),
    "a default with an unknown field": (
        lambda s: _spec_props(s)["parallelism"].update(default={"tensor": 1, "pipeline": 1}),
        "properties[parallelism].default: Invalid value: must not have unknown fields",
    ),
    "a default the schema refuses": (
        lambda s: _spec_props(s)["parallelism"].update(default={"tensor": 0}),
        "properties[parallelism].default.tensor: 0 is less than the minimum of 1",
    ),
    "a default a rule refuses": (
        lambda s: _spec_props(s)["scaling"].update(
            default={"minReplicas": 2, "maxReplicas": 1, "warmReplicas": 0}
        ),
        "properties[scaling].default: minReplicas must not exceed maxReplicas",
    ),
    "no refusal: has()-guarded rules accept empty defaults": (
        lambda s: _spec_props(s).update(
            modelCache={**_spec_props(s)["modelCache"], "default": {}},
            env={**_spec_props(s)["env"], "default": [{"name": "A"}]},
        ),
        "",
    ),
    "a map list key neither required nor defaulted": (
        lambda s: s["properties"]["status"]["properties"]["conditions"]["items"]["required"].remove(
            "type"
        ),
        "it must have a default or be a required property",
    ),
    "a rule that does not compile": (
        lambda s: _spec_props(s)["scaling"]["x-kubernetes-validations"].append(
            {"rule": "self.minReplicas <=", "message": "m"}
        ),
        "rule does not compile",
    ),
    "a rule reading an undeclared field": (
        lambda s: _spec_props(s)["scaling"]["x-kubernetes-validations"].append(
            {"rule": "self.minReplica <= self.maxReplicas", "message": "m"}
        ),
        "undefined field 'self.minReplica'",
    ),
    "a root rule reading metadata beyond its name": (
        lambda s: s["x-kubernetes-validations"].append(
            {"rule": "self.metadata.namespace != ''", "message": "m"}
        ),
        "undefined field 'self.metadata.namespace'",
    ),
    "a transition rule its default fails (oldSelf is the default itself)": (
        lambda s: _spec_props(s)["scaling"]["x-kubernetes-validations"].append(
            {"rule": "self.maxReplicas > oldSelf.maxReplicas", "message": "only up"}
        ),
        "properties[scaling].default: only up",
    ),
    "$ref": (
        lambda s: _spec_props(s)["adapter"].update({"$ref": "#/definitions/x"}),
        "$ref is not supported",
    ),
    "uniqueItems": (
        lambda s: _spec_props(s)["aliases"].update(uniqueItems=True),
        "uniqueItems cannot be set to true",
    ),
    "set items that are objects": (
        lambda s: _spec_props(s)["tolerations"].update({"x-kubernetes-list-type": "set"}),
        "must be atomic as item of a list with x-kubernetes-list-type=set",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_class_of_refusal_is_caught(case: str) -> None:
    mutate, expected = BROKEN[case]
    crd = copy.deepcopy(committed_crd())
    mutate(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    errors = crd_errors(crd)
    if not expected:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ({"name": "X", "type": "integer", "jsonPath": ".status.readyReplica"}, "names no field"),
        ({"name": "X", "type": "string", "jsonPath": "status.phase"}, "starting with ."),
        ({"name": "X", "type": "float", "jsonPath": ".status.phase"}, "Unsupported value"),
        ({"name": "X", "type": "integer", "jsonPath": ".status.phase"}, "cannot show"),
    ],
)
def test_printer_columns_must_name_fields_they_can_show(
    column: dict[str, Any], expected: str
) -> None:
    crd = copy.deepcopy(committed_crd())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(column)
    assert any(expected in e for e in crd_errors(crd))


def _defaults(node: Schema, where: str = "") -> list[tuple[str, Schema]]:
    found = [(where, node)] if "default" in node else []
    for name, prop in (node.get("properties") or {}).items():
        found += _defaults(prop, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        found += _defaults(node["items"], f"{where}[]")
    return found


@pytest.mark.parametrize(
    "where", [w for w, n in _defaults(open_api_schema()) if isinstance(n["default"], dict)]
)
def test_object_defaults_are_what_nested_defaulting_makes_of_an_empty_object(where: str) -> None:
    """Written out in full (so the rules can read them), they are still exactly what the
    server makes of `{}`: no object gets other defaults than before."""
    (node,) = [n for w, n in _defaults(open_api_schema()) if w == where]
    assert node["default"] == apply_defaults(node, {})
    assert apply_defaults(node, node["default"]) == node["default"]


# -- the rules, on objects ----------------------------------------------------------------


def _rules_by_node(node: Schema, where: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = {}
    rules = [r["rule"] for r in node.get("x-kubernetes-validations") or ()]
    if rules:
        found[where] = rules
    for name, prop in (node.get("properties") or {}).items():
        found |= _rules_by_node(prop, (*where, name))
    if isinstance(node.get("items"), dict):
        found |= _rules_by_node(node["items"], (*where, "[]"))
    return found


def _values_at(value: Any, where: tuple[str, ...]) -> list[Any]:
    if not where:
        return [value]
    head, *rest = where
    if head == "[]":
        items = value if isinstance(value, list) else []
        return [v for item in items for v in _values_at(item, tuple(rest))]
    if isinstance(value, dict) and head in value:
        return _values_at(value[head], tuple(rest))
    return []


#: A value for each field of spec.chat.
CHAT: dict[str, Any] = {
    "toolCallParser": "hermes",
    "reasoningParser": "qwen3",
    "chatTemplate": {"configMapRef": {"name": "t", "key": "t.jinja"}},
    "maxImagesPerPrompt": 2,
    "maxTopLogprobs": 5,
}


def _chat_for(engine: str) -> dict[str, Any]:
    """Every chat field `engine` takes."""
    unsupported = {to_camel(o) for o in ENGINE_KINDS[engine].unsupported}
    return {k: v for k, v in CHAT.items() if k not in unsupported}


#: Every field of spec.embedding.
EMBEDDING: dict[str, Any] = {"matryoshka": True, "matryoshkaDimensions": [64, 128]}


def _embedding_chat(engine: str) -> dict[str, Any]:
    """Every chat field `engine` takes on an embedding model."""
    generation = {to_camel(o) for o in GENERATION_ONLY}
    return {k: v for k, v in _chat_for(engine).items() if k not in generation}


#: Minimal valid objects, between them filling every node that carries rules.
MINIMAL = [
    *(backend("m", {"engine": engine, "model": "m"}) for engine in api.ENGINES),
    *(backend("m", {"engine": e, "model": "m", "chat": _chat_for(e)}) for e in api.ENGINES),
    *(
        backend("m", spec(engine=e, task="embed", embedding=EMBEDDING, chat=_embedding_chat(e)))
        for e in api.ENGINES
        if not ENGINE_KINDS[e].no_embeddings
    ),
    backend("m", spec(env=[{"name": "A"}], modelCache={})),
    backend("m", spec(env=[{"name": "A", "value": "1"}], modelCache={"claimName": "c"})),
    backend("m", spec(env=[{"name": "A", "valueFrom": {}}], modelCache={"sizeLimit": "1Gi"})),
]


def test_every_rule_compiles() -> None:
    for rules in _rules_by_node(open_api_schema()).values():
        for rule in rules:
            compile_rule(rule)
    with pytest.raises(CelCompileError):
        compile_rule("self.minReplicas <=")


@pytest.mark.parametrize("obj", MINIMAL, ids=lambda o: str(o["spec"]))
def test_minimal_objects_pass_every_rule_after_defaulting(obj: dict[str, Any]) -> None:
    assert validation_errors(obj) == []


def test_the_minimal_objects_reach_every_rule() -> None:
    for where, rules in _rules_by_node(open_api_schema()).items():
        values = [v for obj in MINIMAL for v in _values_at(defaulted(obj), where)]
        assert values, f"no minimal object reaches {'.'.join(where) or '<root>'}"
        for rule in rules:
            assert all(evaluate(rule, v) for v in values), (rule, values)


#: For each rule (by message): an object the API server refuses with that message.
REFUSED_BY_RULE: dict[str, dict[str, Any]] = {
    api.ROOT_RULES[0].message: backend("8b-llama", spec()),
    api.SPEC_RULES[0].message: backend("m", spec(resources={"gpus": 1}, parallelism={"tensor": 2})),
    api.SCALING_RULES[0].message: backend("m", spec(scaling={"minReplicas": 3, "maxReplicas": 2})),
    api.SCALING_RULES[1].message: backend("m", spec(scaling={"warmReplicas": 2})),
    # `kubectl scale` in mode: operator (the scale subresource writes scaling.replicas).
    api.SCALING_RULES[2].message: backend("m", spec(scaling={"replicas": 2})),
    api.SCALING_RULES[3].message: backend("m", spec(scaling={"mode": "external"})),
    api.ENV_RULES[0].message: backend(
        "m", spec(env=[{"name": "A", "value": "1", "valueFrom": {"x": {}}}])
    ),
    api.MODEL_CACHE_RULES[0].message: backend(
        "m", spec(modelCache={"claimName": "c", "sizeLimit": "1Gi"})
    ),
    # One rule per chat field an engine has no flag for: that field alone, on that engine.
    **{
        f"chat.{to_camel(option)} is not for engine {kind.name}: {why}": backend(
            "m", spec(engine=kind.name, chat={to_camel(option): CHAT[to_camel(option)]})
        )
        for kind in ENGINE_KINDS.values()
        for option, why in kind.unsupported.items()
    },
    "embedding is for an embedding model: set task embed": backend(
        "m", spec(embedding={"matryoshka": True})
    ),
    # One rule per engine that serves no embeddings, and per chat field that shapes
    # generated text (on an engine that takes it otherwise).
    **{
        f"task embed is not for engine {kind.name}: {kind.no_embeddings}": backend(
            "m", spec(engine=kind.name, task="embed")
        )
        for kind in ENGINE_KINDS.values()
        if kind.no_embeddings
    },
    **{
        f"chat.{to_camel(option)} is not for an embedding model (task embed), which generates "
        "no text": backend(
            "m", spec(engine="vllm", task="embed", chat={to_camel(option): CHAT[to_camel(option)]})
        )
        for option in GENERATION_ONLY
    },
}


def test_every_rule_has_an_object_it_refuses() -> None:
    messages = {r["message"] for _, n in _walk(open_api_schema()) for r in n}
    assert messages == set(REFUSED_BY_RULE)


def _walk(node: Schema) -> list[tuple[str, list[dict[str, str]]]]:
    out = [("", node.get("x-kubernetes-validations") or [])]
    for prop in (node.get("properties") or {}).values():
        out += _walk(prop)
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"])
    return out


@pytest.mark.parametrize("message", sorted(REFUSED_BY_RULE))
def test_each_rule_refuses_its_object_on_the_server_and_in_the_model(message: str) -> None:
    obj = REFUSED_BY_RULE[message]
    errors = validation_errors(obj)
    assert any(e.endswith(f": {message}") for e in errors), errors
    with pytest.raises(ValidationError, match=message.split("(")[0][:40]):
        api.ModelBackend.model_validate(obj)


def test_cel_rules_are_the_models_rules() -> None:
    """Every rule in the CRD is one of api.ALL_RULES, and each of those is in the CRD."""
    in_crd = {(r["rule"], r["message"]) for _, rules in _walk(open_api_schema()) for r in rules}
    in_models = {(r.cel, r.message) for rules in api.ALL_RULES.values() for r in rules}
    assert in_crd == in_models


def test_schema_has_defaults_enums_and_minimums() -> None:
    spec_ = open_api_schema()["properties"]["spec"]
    props = spec_["properties"]
    assert spec_["required"] == ["engine", "model"]
    assert props["engine"]["enum"] == ["vllm", "sglang", "tgi"]
    gpus = props["resources"]["properties"]["gpus"]
    assert (gpus["minimum"], gpus["default"]) == (0, 1)
    scaling = props["scaling"]["properties"]
    assert scaling["minReplicas"]["minimum"] == 0
    assert scaling["maxReplicas"]["minimum"] == 1
    assert scaling["scaleDownDelaySeconds"]["default"] == 300
    assert scaling["mode"]["enum"] == ["operator", "external"]
    assert scaling["replicas"]["minimum"] == 0
    assert "default" not in scaling["replicas"]
    assert props["scaling"]["default"] == {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 1,
        "warmReplicas": 0,
        "targetInFlightPerReplica": 32,
        "scaleDownDelaySeconds": 300,
    }
    status = open_api_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(api.PHASES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_validate_against_the_crd(name: str) -> None:
    assert validation_errors(example(name)) == []


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_crd_and_models_reject_the_same_specs(raw: dict[str, Any], message: str) -> None:
    errors = validation_errors(backend("llama", raw))
    assert errors, "the CRD accepted it"
    with pytest.raises(ValidationError):
        api.ModelBackendSpec.model_validate(raw)
    rule_messages = {r.message for rules in api.ALL_RULES.values() for r in rules}
    if any(message in m for m in rule_messages):  # a CEL rule's message: the same words
        assert any(message in error for error in errors), errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"engine": "llamacpp", "model": "m"},
            "spec.engine: 'llamacpp' is not one of ['vllm', 'sglang', 'tgi']",
        ),
        ({"engine": "vllm"}, "spec: 'model' is a required property"),
        (
            {"engine": "vllm", "model": "m", "resources": {"gpus": -1}},
            "spec.resources.gpus: -1 is less than the minimum of 0",
        ),
        (
            {"engine": "vllm", "model": "m", "scaling": {"minReplicas": 3, "maxReplicas": 2}},
            "spec.scaling: minReplicas must not exceed maxReplicas",
        ),
        (
            {"engine": "vllm", "model": "m", "aliases": ["a", "b", "a"]},
            'spec.aliases.2: Duplicate value: "a"',
        ),
    ],
)
def test_rejections_say_what_is_wrong(raw: dict[str, Any], expected: str) -> None:
    assert expected in validation_errors(backend("llama", raw))


def test_transition_rules_do_not_run_on_create() -> None:
    crd = copy.deepcopy(committed_crd())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _spec_props(schema)["scaling"]["x-kubernetes-validations"].append(
        {"rule": "self.maxReplicas == oldSelf.maxReplicas", "message": "immutable"}
    )
    assert crd_errors(crd) == []
    assert validation_errors(backend("m", spec(scaling={"maxReplicas": 3})), schema) == []


def test_a_blocking_schema_error_keeps_the_rules_from_running() -> None:
    """As on the server: with an enum violation the rules are not run (they would read what
    is not there), and the answer says so; a minimum violation does not block them."""
    blocked = validation_errors(
        backend("m", {"engine": "x", "model": "m", "scaling": {"minReplicas": 3}})
    )
    assert blocked[-1] == BLOCKED
    assert not any("minReplicas must not exceed" in e for e in blocked)
    both = validation_errors(backend("m", spec(resources={"gpus": -1}, scaling={"minReplicas": 3})))
    assert any("minimum of 0" in e for e in both)
    assert any("minReplicas must not exceed maxReplicas" in e for e in both)


def test_cel_rules_agree_with_the_models_on_edge_cases() -> None:
    for low, high, warm in [(0, 1, 0), (1, 1, 1), (2, 1, 0), (0, 3, 4), (3, 3, 3)]:
        value = defaulted(
            backend(
                "llama",
                spec(scaling={"minReplicas": low, "maxReplicas": high, "warmReplicas": warm}),
            )
        )["spec"]["scaling"]
        for rule in api.SCALING_RULES:
            model_ok = rule.check(
                api.Scaling.model_construct(min_replicas=low, max_replicas=high, warm_replicas=warm)
            )
            assert evaluate(rule.cel, value) == model_ok, (rule.cel, value)


@pytest.mark.parametrize("engine", api.ENGINES)
@pytest.mark.parametrize("field", CHAT)
def test_chat_rules_agree_with_the_models(engine: str, field: str) -> None:
    """Each chat field set alone, and every field the engine takes at once: the CRD and the
    models accept and refuse the same."""
    for chat in ({field: CHAT[field]}, _chat_for(engine)):
        obj = backend("m", spec(engine=engine, chat=chat))
        server_ok = validation_errors(obj) == []
        try:
            api.ModelBackend.model_validate(obj)
            model_ok = True
        except ValidationError:
            model_ok = False
        assert server_ok == model_ok, (engine, chat)
        expected = all(to_camel(o) not in chat for o in ENGINE_KINDS[engine].unsupported)
        assert server_ok == expected, (engine, chat)


@pytest.mark.parametrize("engine", api.ENGINES)
@pytest.mark.parametrize("task", ["generate", "embed"])
@pytest.mark.parametrize("field", [*CHAT, "embedding"])
def test_task_rules_agree_with_the_models(engine: str, task: str, field: str) -> None:
    """An embedding model on each engine with each field set alone: the CRD and the models
    accept and refuse the same, and what they refuse is what the registry says."""
    setting = {"embedding": EMBEDDING} if field == "embedding" else {"chat": {field: CHAT[field]}}
    obj = backend("m", spec(engine=engine, task=task, **setting))
    server_ok = validation_errors(obj) == []
    try:
        api.ModelBackend.model_validate(obj)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert server_ok == model_ok, (engine, task, field)
    kind = ENGINE_KINDS[engine]
    if task == "generate":
        expected = field != "embedding" and field not in map(to_camel, kind.unsupported)
    else:
        expected = (
            kind.no_embeddings is None
            and field not in map(to_camel, kind.unsupported)
            and field not in map(to_camel, GENERATION_ONLY)
        )
    assert server_ok == expected, (engine, task, field)


def test_name_rule_runs_on_metadata() -> None:
    assert validation_errors(backend("llama", spec())) == []
    errors = validation_errors(backend("8b", spec()))
    assert any("DNS-1035" in e for e in errors), errors


@pytest.mark.parametrize("name", EXAMPLES)
def test_server_defaults_and_model_defaults_agree(name: str) -> None:
    """The operator reads the same spec whether or not the API server filled the defaults."""
    raw = example(name)
    assert api.ModelBackend.model_validate(
        defaulted(copy.deepcopy(raw))
    ) == api.ModelBackend.model_validate(raw)
