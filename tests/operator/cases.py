"""Invalid ModelBackend specs, each with words its rejection must contain.

Shared by the model tests and the CRD tests: both must refuse every one of them.
"""

from __future__ import annotations

from typing import Any


def spec(**fields: Any) -> dict[str, Any]:
    return {"engine": "vllm", "model": "org/model", **fields}


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"model": "m"}, "engine"),
    (spec(engine="llamacpp"), "engine"),
    ({"engine": "vllm"}, "model"),
    (spec(model=""), "model"),
    (spec(resources={"gpus": -1}), "resources.gpus"),
    (spec(parallelism={"tensor": 0}), "parallelism.tensor"),
    (spec(maxModelLen=0), "maxModelLen"),
    (spec(scaling={"minReplicas": 3, "maxReplicas": 2}), "minReplicas must not exceed maxReplicas"),
    (
        spec(scaling={"warmReplicas": 2, "maxReplicas": 1}),
        "warmReplicas must not exceed maxReplicas",
    ),
    (spec(scaling={"maxReplicas": 0}), "scaling.maxReplicas"),
    (spec(scaling={"targetInFlightPerReplica": 0}), "targetInFlightPerReplica"),
    (spec(resources={"gpus": 1}, parallelism={"tensor": 2}), "parallelism.tensor must not exceed"),
    (spec(modelCache={"claimName": "c", "sizeLimit": "1Gi"}), "not both"),
    (spec(env=[{"name": "A", "value": "1", "valueFrom": {"x": {}}}]), "not both"),
    (spec(resources={"memory": "lots"}), "resources.memory"),
    (spec(unknownField=1), "unknownField"),
    (spec(tolerations=[{"operator": "Maybe"}]), "tolerations"),
    (spec(apiKeySecret={"name": "Engine_Key", "key": "token"}), "apiKeySecret.name"),
    (spec(apiKeySecret={"name": "engine-key"}), "apiKeySecret.key"),
    (spec(apiKeySecret={"name": "engine-key", "key": "a/b"}), "apiKeySecret.key"),
    (spec(task="classify"), "task"),
    (spec(task="embed", embedding={"matryoshkaDimensions": [0]}), "matryoshkaDimensions"),
    (spec(embedding={}), "embedding is for an embedding model"),
    (spec(engine="tgi", task="embed"), "task embed is not for engine tgi"),
    (spec(task="embed", chat={"toolCallParser": "hermes"}), "not for an embedding model"),
]
