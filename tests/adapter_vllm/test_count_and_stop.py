"""The vLLM translation's token counting (`/tokenize`) and stop strings (`stop_reason`).

vLLM's request models import torch (out of reach, see test_engine_models): a tokenize body
is checked for its keys against the fields of vLLM 0.33.0's `TokenizeChatRequest` and
`TokenizeCompletionRequest` (`entrypoints/serve/tokenize/protocol.py`, listed below), and
for the shapes of its messages and tools, which vLLM types as the chat route's, with the
`openai` SDK's types.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
import orjson
import pytest

from switchyard.adapter_vllm.translation import CHAT_COMPLETIONS, TOKENIZE
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.adapter_vllm.test_engine_models import T, openai_refusal
from tests.support.canonical import generate_request
from tests.support.request_matrix import PIXEL, Case, feature_cases, matrix, with_tools

#: vLLM 0.33.0 `TokenizeChatRequest`'s fields.
TOKENIZE_CHAT_FIELDS: Final = frozenset({
    "model", "messages", "add_generation_prompt", "return_token_strs",
    "continue_final_message", "add_special_tokens", "chat_template", "chat_template_kwargs",
    "media_io_kwargs", "mm_processor_kwargs", "tools",
})  # fmt: skip
#: vLLM 0.33.0 `TokenizeCompletionRequest`'s fields.
TOKENIZE_PROMPT_FIELDS: Final = frozenset(
    {"model", "prompt", "add_special_tokens", "return_token_strs"}
)


@pytest.mark.parametrize("case", [*matrix(), *feature_cases()], ids=str)
def test_every_tokenize_body_is_a_vllm_tokenize_request(case: Case) -> None:
    call = T.count_request(case.request)
    assert call.path == TOKENIZE
    body = call.body
    if case.request.WhichOneof("input") == "chat":
        assert set(body) <= TOKENIZE_CHAT_FIELDS, body
        # The chat route's defaults: the generation prompt, no special tokens added.
        assert body["add_generation_prompt"] is True
        assert "add_special_tokens" not in body
        chat: dict[str, Any] = {k: body[k] for k in ("model", "messages", "tools") if k in body}
        assert openai_refusal(CHAT_COMPLETIONS, chat) is None, body
        # The same messages and tools as the generation.
        generation = T.request(case.request, stream=False).body
        assert body["messages"] == generation["messages"]
        assert body.get("tools") == generation.get("tools")
    else:
        assert set(body) <= TOKENIZE_PROMPT_FIELDS, body
        assert body["prompt"] == case.request.prompt


def test_tools_are_counted_whatever_the_tool_choice_and_images_too() -> None:
    request = generate_request("qwen", messages=[("user", "Hi")])
    with_tools(request, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE))
    request.chat.messages[0].parts.add(image=pb.Image(url=PIXEL))
    body = T.count_request(request).body
    assert [t["function"]["name"] for t in body["tools"]] == ["weather", "time_now"]
    assert body["messages"][0]["content"][0]["image_url"] == {"url": PIXEL}


def test_the_count_is_vllm_s_count() -> None:
    answer = {"count": 12, "max_model_len": 1024, "tokens": list(range(12)), "token_strs": None}
    assert T.token_count(generate_request("qwen", prompt="Hi"), answer) == 12
    bad: Any
    for bad in ({"tokens": []}, {"count": -1}, [], {"count": "12"}):
        with pytest.raises(InferenceError) as caught:
            T.token_count(generate_request("qwen", prompt="Hi"), bad)
        assert caught.value.code == grpc.StatusCode.INTERNAL


def _chat(stop_reason: Any, finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                     "finish_reason": finish, "stop_reason": stop_reason}],
        "usage": {"prompt_tokens": 9, "total_tokens": 12, "completion_tokens": 3},
    }  # fmt: skip


def _text(stop_reason: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "text": "Hello", "logprobs": None, "finish_reason": "stop",
                     "stop_reason": stop_reason}],
        "usage": {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("\n\n", "\n\n"), (None, ""), (151645, "")],
    ids=["stop-string", "eos", "stop-token-id"],
)
def test_a_unary_choice_names_its_stop_string(stop_reason: Any, expected: str) -> None:
    chat = generate_request("qwen", messages=[("user", "Hi")], max_tokens=8)
    assert T.completion(chat, _chat(stop_reason)).choices[0].stop_sequence == expected
    prompt = generate_request("qwen", prompt="Hi", max_tokens=8)
    assert T.completion(prompt, _text(stop_reason)).choices[0].stop_sequence == expected


def test_a_length_finish_names_none() -> None:
    chat = generate_request("qwen", messages=[("user", "Hi")], max_tokens=8)
    assert T.completion(chat, _chat("x", "length")).choices[0].stop_sequence == ""


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "prompt"])
def test_a_stream_s_finishing_chunk_names_its_stop_string(chat: bool) -> None:
    request = (
        generate_request("qwen", messages=[("user", "Hi")], max_tokens=8)
        if chat
        else generate_request("qwen", prompt="Hi", max_tokens=8)
    )
    parser = T.stream_parser(request)
    key = "delta" if chat else "text"
    value: Any = {"content": "Hi"} if chat else "Hi"
    chunks = [
        {"choices": [{"index": 0, key: value, "finish_reason": None, "stop_reason": None}]},
        {"choices": [{"index": 0, key: {} if chat else "", "finish_reason": "stop",
                      "stop_reason": "END"}]},
    ]  # fmt: skip
    deltas = [parser.feed("", orjson.loads(orjson.dumps(c))) for c in chunks]
    assert [(d.finish_reason, d.stop_sequence) for d in deltas if d is not None] == [
        (pb.FINISH_REASON_UNSPECIFIED, ""),
        (pb.FINISH_REASON_STOP, "END"),
    ]
