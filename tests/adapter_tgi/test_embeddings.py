"""TGI serves no embeddings (TGI 3.3's router has no embeddings route): the translation says
so in its model description and refuses an embedding request before any engine call; the
identity comes from `/info` (`model_id`, and `model_sha`, the revision)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from switchyard.adapter import translation as base
from switchyard.adapter_tgi.translation import TgiTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.embeddings import embed_request
from tests.support.engine_http import RecordingEngine


def _engine(**info: Any) -> RecordingEngine:
    return RecordingEngine({("GET", "/info"): {"max_total_tokens": 4096, **info}})


@pytest.mark.parametrize(
    ("info", "identity"),
    [
        ({"model_id": "org/m", "model_sha": "abc123"}, "tgi:org/m@abc123"),
        ({"model_id": "/data/m", "model_sha": None}, "tgi:/data/m"),
        ({}, ""),
    ],
    ids=["hub", "local-path", "none"],
)
async def test_tgi_serves_chat_and_completions_of_its_weights(
    info: dict[str, Any], identity: str
) -> None:
    model = await TgiTranslation("m").describe(_engine(**info))
    assert model == base.ModelDescription(base.GENERATION, 4096, 0, identity)


def test_an_embedding_request_is_refused_without_an_engine_call() -> None:
    with pytest.raises(InferenceError) as caught:
        TgiTranslation("m").embed_request(embed_request("m", "a"))
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert error.message == "model 'm' does not support embeddings"
