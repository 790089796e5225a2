"""The SGLang translation's token counting (`/v1/tokenize`) and stop strings (`matched_stop`,
native `meta_info.finish_reason.matched`).

Tokenize bodies are checked against SGLang 0.5.23's own `TokenizeRequest` (from its release
wheel), and turned into the chat request its route renders (`to_chat_completion_request`),
as SGLang does before templating.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from switchyard.adapter_sglang.translation import TOKENIZE, SglangTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.engine_wheels import sglang_models
from tests.support.request_matrix import PIXEL, Case, feature_cases, matrix, on_the_wire

T = SglangTranslation("qwen")


def _images(case: Case) -> bool:
    return any(p.image.url for m in case.request.chat.messages for p in m.parts)


@pytest.mark.parametrize(
    "case", [c for c in [*matrix(), *feature_cases()] if not _images(c)], ids=str
)
def test_sglang_accepts_every_tokenize_body(case: Case) -> None:
    call = T.count_request(case.request)
    assert call.path == TOKENIZE
    protocol = sglang_models().protocol
    model = protocol.TokenizeRequest.model_validate(on_the_wire(call.body))
    if case.request.WhichOneof("input") == "chat":
        chat = model.to_chat_completion_request()
        assert model.add_generation_prompt is None  # rendered as for a chat completion
        generation = T.request(case.request, stream=False).body
        assert call.body["messages"] == generation["messages"]
        assert call.body.get("tools") == generation.get("tools")
        assert call.body.get("tool_choice") == generation.get("tool_choice")
        if case.request.tools:
            assert [t.function.name for t in chat.tools] == ["weather", "time_now"]
    else:
        assert model.prompt == case.request.prompt
        assert model.add_special_tokens  # as /generate encodes its text


def test_the_model_refuses_what_sglang_refuses() -> None:
    protocol = sglang_models().protocol
    with pytest.raises(ValueError, match="Exactly one of"):
        protocol.TokenizeRequest.model_validate({"model": "qwen"})


def test_images_are_refused_rather_than_undercounted() -> None:
    request = generate_request("qwen", messages=[("user", "")])
    request.chat.messages[0].parts.add(text="What is this?")
    request.chat.messages[0].parts.add(image=pb.Image(url=PIXEL))
    with pytest.raises(InferenceError) as caught:
        T.count_request(request)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.UNSUPPORTED_FEATURE,
    )


def test_the_count_is_sglang_s_count() -> None:
    request = generate_request("qwen", prompt="Hi")
    assert T.token_count(request, {"tokens": [1, 2, 3], "count": 3, "max_model_len": 8}) == 3
    bad: Any
    for bad in ({"tokens": [[1]], "count": [1]}, {"tokens": []}, []):
        with pytest.raises(InferenceError) as caught:
            T.token_count(request, bad)
        assert caught.value.code == grpc.StatusCode.INTERNAL


def _meta(finish: Any) -> dict[str, Any]:
    return {"id": "r", "prompt_tokens": 3, "completion_tokens": 2, "finish_reason": finish}


@pytest.mark.parametrize(
    ("matched", "expected"),
    [("END", "END"), (2, ""), (None, "")],
    ids=["stop-string", "eos-token-id", "none"],
)
def test_a_native_answer_names_its_stop_string(matched: Any, expected: str) -> None:
    request = generate_request("qwen", prompt="Hi", max_tokens=8)
    finish = {"type": "stop", "matched": matched}
    body = {"text": "Hi", "output_ids": [5, 6], "meta_info": _meta(finish)}
    assert T.completion(request, body).choices[0].stop_sequence == expected
    parser = T.stream_parser(request)
    first = parser.feed(
        "", {"text": "H", "output_ids": [5], "meta_info": {**_meta(None), "completion_tokens": 1}}
    )
    last = parser.feed("", body)
    assert first is not None
    assert last is not None
    assert (first.stop_sequence, last.stop_sequence) == ("", expected)
    assert last.finish_reason == pb.FINISH_REASON_STOP


def test_a_length_finish_names_none() -> None:
    request = generate_request("qwen", prompt="Hi", max_tokens=8)
    finish = {"type": "length", "length": 2, "matched": "END"}
    body = {"text": "Hi", "output_ids": [5, 6], "meta_info": _meta(finish)}
    assert T.completion(request, body).choices[0].stop_sequence == ""


def test_a_chat_answer_names_its_stop_string() -> None:
    request = generate_request("qwen", messages=[("user", "Hi")], max_tokens=8)
    body: dict[str, Any] = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "finish_reason": "stop", "matched_stop": "END"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }  # fmt: skip
    assert T.completion(request, body).choices[0].stop_sequence == "END"
    body["choices"][0]["matched_stop"] = 151645  # EOS
    assert T.completion(request, body).choices[0].stop_sequence == ""
    parser = T.stream_parser(request)
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None,
                      "matched_stop": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "matched_stop": "END"}]},
    ]  # fmt: skip
    deltas = [parser.feed("", orjson.loads(orjson.dumps(c))) for c in chunks]
    assert [(d.finish_reason, d.stop_sequence) for d in deltas if d is not None] == [
        (pb.FINISH_REASON_UNSPECIFIED, ""),
        (pb.FINISH_REASON_STOP, "END"),
    ]
