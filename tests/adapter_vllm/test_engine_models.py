"""Every body the vLLM adapter sends is an OpenAI request as the `openai` SDK types it.

vLLM's own request models import torch (out of reach); vLLM 0.33.0's
`ChatCompletionRequest` and `CompletionRequest` take OpenAI's fields in OpenAI's shapes
(messages, content parts, tools, tool_choice, logprobs, n) and allow extra keys for its
own (`structured_outputs`, `top_k`, `ignore_eos`, `request_id`, ...). So the SDK's request
types, validated with pydantic (extra keys ignored, as vLLM allows them), check the shapes
of the OpenAI part of every body; the vLLM extras are checked by the translation's tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Final

import pytest
from openai.types import completion_create_params
from openai.types.chat import completion_create_params as chat_create_params
from pydantic import TypeAdapter, ValidationError

from switchyard.adapter_vllm.translation import CHAT_COMPLETIONS, COMPLETIONS, VllmTranslation
from tests.support.engine_http import RecordingEngine
from tests.support.request_matrix import Case, feature_cases, matrix, on_the_wire

CHAT: Final = TypeAdapter(chat_create_params.CompletionCreateParamsBase)
PROMPT: Final = TypeAdapter(completion_create_params.CompletionCreateParamsBase)


def _translation() -> VllmTranslation:
    """As once ready: the context length read from `/v1/models`."""
    translation = VllmTranslation("qwen")
    cards = {"data": [{"id": "qwen", "max_model_len": 1024}]}
    asyncio.run(translation.max_model_len(RecordingEngine({("GET", "/v1/models"): cards})))
    return translation


T = _translation()


def _exhaust(value: Any) -> Any:
    """Validated values with every lazily validated iterable (the SDK types messages,
    tools and parts as `Iterable`) read, so that their items are validated too."""
    if isinstance(value, dict):
        return {k: _exhaust(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exhaust(v) for v in value]
    if isinstance(value, Iterator):
        return [_exhaust(v) for v in value]
    return value


def openai_refusal(path: str, body: dict[str, Any]) -> str | None:
    adapter = CHAT if path == CHAT_COMPLETIONS else PROMPT
    try:
        _exhaust(adapter.validate_python(on_the_wire(body)))
    except ValidationError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", [*matrix(), *feature_cases()], ids=str)
def test_every_body_is_an_openai_request(case: Case) -> None:
    call = T.request(case.request, stream=case.stream)
    assert call.path in (CHAT_COMPLETIONS, COMPLETIONS)
    refusal = openai_refusal(call.path, call.body)
    assert refusal is None, f"not an OpenAI request: {call.body}: {refusal}"


def test_the_check_can_fail() -> None:
    chat = {"model": "qwen", "messages": [{"role": "user", "content": "Hi"}]}
    assert openai_refusal(CHAT_COMPLETIONS, chat) is None
    named = {**chat, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert openai_refusal(CHAT_COMPLETIONS, {**named, "tool_choice": {"name": "f"}})
    part = {"type": "image_url", "image_url": "data:,"}  # the URL must be an object
    bad_part = {"model": "qwen", "messages": [{"role": "user", "content": [part]}]}
    assert openai_refusal(CHAT_COMPLETIONS, bad_part)
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
    bad_call = {"model": "qwen", "messages": [{"role": "assistant", "tool_calls": [call]}]}
    assert openai_refusal(CHAT_COMPLETIONS, bad_call)  # arguments are JSON text
    assert openai_refusal(COMPLETIONS, {"model": "qwen", "prompt": "x", "logprobs": True}) is None
    assert openai_refusal(COMPLETIONS, {"model": "qwen", "prompt": "x", "logprobs": "two"})
