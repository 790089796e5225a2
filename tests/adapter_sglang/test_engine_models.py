"""Every body the SGLang adapter sends is one SGLang 0.5.23's own request models accept.

The models come from SGLang's release wheel (tests/support/engine_wheels.py):
- `/generate`: the JSON contract gate `http_server.generate_request` applies before serving
  (`api_contract.generate_contract_error` → `api_types.GenerateRequest.from_json_value`;
  a violation is a 400 `{"error": "..."}`). It refuses unknown `sampling_params` keys and
  values of the wrong JSON type.
- `/v1/chat/completions`: the route's body model, `protocol.ChatCompletionRequest`
  (pydantic, lax; unknown keys are ignored, so only shapes and types can fail).
Out of reach (their modules import torch): the `GenerateReqInput` dataclass FastAPI also
parses `/generate` into, and the ranges `SamplingParams.verify` checks later.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import pytest

from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support import engine_wheels
from tests.support.engine_wheels import sglang_models
from tests.support.request_matrix import PROMPT, Case, feature_cases, matrix, on_the_wire

T = SglangTranslation("qwen")
CASES: Final = matrix()
#: The `sampling_params` keys that constrain the output (at most one may be set).
CONSTRAINT_KEYS: Final = ("json_schema", "regex", "ebnf", "structural_tag")


def sglang_refusal(path: str, body: dict[str, Any]) -> str | None:
    """What SGLang's request model says against `body` on `path`, or None if it accepts it."""
    models = sglang_models()
    body = on_the_wire(body)  # as the server parses it (its validators change what they get)
    if path == "/generate":
        try:
            models.api_types.GenerateRequest.from_json_value(body)
        except models.api_types.JsonContractError as exc:
            return str(exc)
        return None
    assert path == "/v1/chat/completions", path
    try:
        models.protocol.ChatCompletionRequest.model_validate(body)
    except ValueError as exc:  # pydantic's ValidationError
        return str(exc)
    return None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sglang_accepts_every_body_the_adapter_sends(case: Case) -> None:
    call = T.request(case.request, stream=case.stream)
    assert call.path == ("/generate" if case.request.HasField("prompt") else "/v1/chat/completions")
    refusal = sglang_refusal(call.path, call.body)
    assert refusal is None, f"SGLang refuses {call.path} {call.body}: {refusal}"


@pytest.mark.parametrize("case", feature_cases(), ids=str)
def test_sglang_accepts_every_feature_body(case: Case) -> None:
    """Tools, tool choice, tool results, images, n and logprobs as SGLang's models read them."""
    call = T.request(case.request, stream=case.stream)
    refusal = sglang_refusal(call.path, call.body)
    assert refusal is None, f"SGLang refuses {call.path} {call.body}: {refusal}"
    if call.path == "/v1/chat/completions":
        model = sglang_models().protocol.ChatCompletionRequest.model_validate(
            on_the_wire(call.body)
        )
        assert model.n == (case.request.n or 1)
        assert model.logprobs == case.request.HasField("logprobs")
        if case.request.tools:
            assert [t.function.name for t in model.tools] == ["weather", "time_now"]


def test_the_models_refuse_what_sglang_refuses() -> None:
    """The check can fail: bodies SGLang's server answers with 400 (or 422)."""
    generate = {"text": PROMPT, "sampling_params": {"max_new_tokens": 16}}
    assert sglang_refusal("/generate", generate) is None
    bad_type = {"text": PROMPT, "sampling_params": {"max_new_tokens": "16"}}
    assert sglang_refusal("/generate", bad_type) == 'invalid type: string "16", expected i64'
    unknown = {"text": PROMPT, "sampling_params": {"seed": 7}}
    assert (sglang_refusal("/generate", unknown) or "").startswith("unknown field `seed`")
    chat = {"model": "qwen", "messages": [{"role": "user", "content": "Hi"}]}
    assert sglang_refusal("/v1/chat/completions", chat) is None
    nameless = {**chat, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}
    assert "json_schema.name" in (sglang_refusal("/v1/chat/completions", nameless) or "")


def _as_prompt(request: pb.GenerateRequest) -> pb.GenerateRequest:
    prompt = pb.GenerateRequest()
    prompt.CopyFrom(request)
    prompt.prompt = PROMPT  # the oneof: replaces the messages
    return prompt


def _constraint(params: dict[str, Any]) -> dict[str, Any]:
    """The output constraint in SGLang sampling params, a JSON schema parsed."""
    found = {k: params[k] for k in CONSTRAINT_KEYS if params.get(k) is not None}
    if "json_schema" in found:
        found["json_schema"] = orjson.loads(found["json_schema"])
    return found


@pytest.mark.filterwarnings("ignore:max_tokens is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    "case", [c for c in CASES if c.request.HasField("chat") and not c.stream], ids=str
)
def test_both_routes_ask_sglang_for_the_same_sampling(case: Case) -> None:
    """SGLang's own mapping of the chat body (`ChatCompletionRequest.to_sampling_params`)
    gives what the adapter sends `/generate` for the same request: the same limits, seed
    and constraint (json_object included, which the adapter writes itself on `/generate`)."""
    chat = T.request(case.request, stream=False)
    native = T.request(_as_prompt(case.request), stream=False).body["sampling_params"]
    model = sglang_models().protocol.ChatCompletionRequest.model_validate(on_the_wire(chat.body))
    from_chat = model.to_sampling_params(stop=[], model_generation_config={})
    assert _constraint(from_chat) == _constraint(native)
    for key, value in native.items():
        if key not in ("stop", *CONSTRAINT_KEYS):
            assert from_chat[key] == value, key


def test_a_missing_wheel_fails_the_test_with_the_way_to_fetch_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(engine_wheels, "WHEELS", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"run `make engine-wheels`"):
        engine_wheels.wheel("sglang", engine_wheels.SGLANG_VERSION)
