"""The TGI translation's token counting (`/chat_tokenize`, `/tokenize`) and stop strings
(found by the adapter's own trimming, so it knows which one ended the output).

Tokenize bodies are checked against the request schemas TGI's OpenAPI document gives those
routes (`ChatRequest`, `GenerateRequest`), with the router's own rules (see
test_openapi_requests).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from switchyard.adapter_tgi.translation import CHAT_TOKENIZE, TOKENIZE, TgiTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.adapter_tgi.test_openapi_requests import CASES, tgi_refusal
from tests.adapter_tgi.test_translation import _chunk, _last, _token, chat, prompt
from tests.support.canonical import generate_request
from tests.support.request_matrix import PIXEL, Case, feature_cases


def _vision() -> TgiTranslation:
    t = TgiTranslation("qwen")
    t.reads_images = True
    return t


@pytest.mark.parametrize("case", [*CASES, *feature_cases()], ids=str)
def test_tgi_accepts_every_tokenize_body(case: Case) -> None:
    t = _vision()
    call = t.count_request(case.request)
    if case.request.HasField("chat"):
        assert call.path == CHAT_TOKENIZE
        # The very body the chat route gets: templated with the same tools and images.
        generation = t.request(case.request, stream=False)
        assert call.body == generation.body
    else:
        assert call.path == TOKENIZE
        assert call.body == {"inputs": case.request.prompt}
    refusal = tgi_refusal(call.path, call.body)
    assert not refusal, f"TGI refuses {call.path} {call.body}: {refusal}"


def test_the_schemas_of_the_tokenize_routes_can_fail() -> None:
    assert tgi_refusal(TOKENIZE, {"parameters": {}})
    assert tgi_refusal(CHAT_TOKENIZE, {"model": "tgi"})


def test_images_to_a_text_only_model_are_refused_as_generate_refuses_them() -> None:
    t = TgiTranslation("qwen")
    t.reads_images = False
    request = generate_request("qwen", messages=[("user", "")])
    request.chat.messages[0].parts.add(image=pb.Image(url=PIXEL))
    with pytest.raises(InferenceError) as caught:
        t.count_request(request)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.UNSUPPORTED_FEATURE,
    )


def test_the_count_is_the_number_of_tokens_tgi_lists() -> None:
    tokens = [{"id": i, "text": "a", "start": i, "stop": i + 1} for i in range(5)]
    t = TgiTranslation("qwen")
    assert t.token_count(prompt(), tokens) == 5
    assert t.token_count(chat(), {"tokenize_response": tokens, "templated_text": "aaaaa"}) == 5
    for bad in ({"templated_text": ""}, "aaaaa", None):
        with pytest.raises(InferenceError) as caught:
            t.token_count(chat(), bad)
        assert caught.value.code == grpc.StatusCode.INTERNAL


def _native_body(text: str, reason: str) -> dict[str, Any]:
    details = {"finish_reason": reason, "generated_tokens": 4, "seed": None, "tokens": []}
    return {"generated_text": text, "details": details}


@pytest.mark.parametrize(
    ("reason", "stops", "text", "expected"),
    [
        ("stop_sequence", ["END", "never"], "Hello END", ("Hello ", "END")),
        # Two stop strings: the one complete first ("ab" ends before "xabc" does).
        ("stop_sequence", ["xabc", "ab"], "Hi xabc", ("Hi x", "ab")),
        ("eos_token", ["END"], "Hello", ("Hello", "")),
        ("length", [], "Hello", ("Hello", "")),
    ],
)
def test_a_unary_answer_names_the_stop_string_found(
    reason: str, stops: list[str], text: str, expected: tuple[str, str]
) -> None:
    t = TgiTranslation("qwen")
    request = prompt(stop=stops)
    (choice,) = t.completion(request, _native_body(text, reason), {"x-prompt-tokens": "3"}).choices
    assert (choice.text, choice.stop_sequence) == expected
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop" if reason != "length" else "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }  # fmt: skip
    (choice,) = t.completion(chat(stop=stops), body).choices
    assert (choice.text, choice.stop_sequence) == expected


def test_a_native_stream_names_the_stop_string_on_its_finishing_delta() -> None:
    t = TgiTranslation("qwen")
    parser = t.stream_parser(prompt(stop=["ENDX"]))
    events = [_token("Hello"), _token(" EN"), _token("DX"), _last(" more", "length", 4)]
    deltas = [d for d in (parser.feed("", e) for e in events) if d is not None]
    finishing = [d for d in deltas if d.finish_reason]
    assert "".join(d.text for d in deltas) == "Hello "
    assert finishing
    assert all(
        (d.finish_reason, d.stop_sequence) == (pb.FINISH_REASON_STOP, "ENDX") for d in finishing
    )
    # The end of sequence names none.
    parser = t.stream_parser(prompt(stop=["ENDX"]))
    eos = [_token("Hello"), _last("</s>", "eos_token", 2, special=True)]
    last = [d for d in (parser.feed("", e) for e in eos) if d is not None][-1]
    assert (last.finish_reason, last.stop_sequence) == (pb.FINISH_REASON_STOP, "")


def test_a_chat_stream_names_the_stop_string_on_its_finishing_delta() -> None:
    t = TgiTranslation("qwen")
    parser = t.stream_parser(chat(stop=["ENDX"]))
    chunks = [_chunk("Hello"), _chunk(" END"), _chunk("X more"), _chunk("", "stop")]
    deltas = [d for d in (parser.feed("", c) for c in chunks) if d is not None]
    assert "".join(d.text for d in deltas) == "Hello "
    finishing = [d for d in deltas if d.finish_reason]
    assert finishing
    assert all(
        (d.finish_reason, d.stop_sequence) == (pb.FINISH_REASON_STOP, "ENDX") for d in finishing
    )
