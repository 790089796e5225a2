"""Response bodies and stream chunks, field for field as vLLM 0.33 serializes them.

Whole responses are `model_dump()`s (every field, nulls included). Stream chunks are
`model_dump_json(exclude_unset=True)`: only the fields vLLM's code sets, in the models'
field order; the final usage chunk drops nulls. Chunks are plain dicts serialized with
orjson, never pydantic models: this is the hot path of every benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.vllm.engine import Outcome, Step


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """`UsageInfo.model_dump()` (a whole response's usage)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def completion_response(
    request_id: str,
    created: int,
    model: str,
    outcomes: Sequence[Outcome],
    prompt_tokens: int,
    fingerprint: str,
    prefixes: Sequence[str] = (),
) -> dict[str, Any]:
    """A `/v1/completions` response; `prefixes[prompt]` is prepended (echo)."""
    choices = [
        {
            "index": o.index,
            "text": (prefixes[o.prompt] if prefixes else "") + o.text,
            "logprobs": None,
            "finish_reason": o.finish_reason,
            "stop_reason": o.stop_reason,
            "token_ids": None,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "routed_experts": None,
            "weight_versions": None,
        }
        for o in outcomes
    ]
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": usage(prompt_tokens, sum(o.completion_tokens for o in outcomes)),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def chat_response(
    request_id: str,
    created: int,
    model: str,
    outcomes: Sequence[Outcome],
    prompt_tokens: int,
    fingerprint: str,
) -> dict[str, Any]:
    """A `/v1/chat/completions` response."""
    choices = [
        {
            "index": o.index,
            "message": {
                "role": "assistant",
                "content": o.text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": None,
            },
            "logprobs": None,
            "finish_reason": o.finish_reason,
            "stop_reason": o.stop_reason,
            "token_ids": None,
            "routed_experts": None,
            "weight_versions": None,
        }
        for o in outcomes
    ]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": usage(prompt_tokens, sum(o.completion_tokens for o in outcomes)),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def _final_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


class CompletionStream:
    """The chunks of one streamed `/v1/completions` request."""

    def __init__(
        self,
        request_id: str,
        created: int,
        model: str,
        fingerprint: str,
        prompt_tokens: Sequence[int],
        *,
        include_usage: bool,
        continuous_usage: bool,
        prefixes: Sequence[str] = (),
    ) -> None:
        self._head = {"id": request_id, "object": "text_completion", "created": created}
        self._model = model
        self._fingerprint = fingerprint
        self._prompt_tokens = prompt_tokens
        self._include_usage = include_usage
        self._continuous = continuous_usage
        self._prefixes = prefixes
        self._tokens: dict[int, int] = {}
        self._echoed: set[int] = set()

    def chunk(self, outcome: Outcome, step: Step) -> bytes:
        i = outcome.index
        done = self._tokens.get(i, 0) + step.tokens
        self._tokens[i] = done
        text = step.text
        if self._prefixes and i not in self._echoed:
            self._echoed.add(i)
            text = self._prefixes[outcome.prompt] + text
        body: dict[str, Any] = {
            **self._head,
            "model": self._model,
            "choices": [
                {
                    "index": i,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": step.finish_reason,
                    "stop_reason": step.stop_reason,
                    "prompt_token_ids": None,
                    "token_ids": None,
                    "weight_versions": None,
                }
            ],
        }
        if self._continuous:
            prompt = self._prompt_tokens[outcome.prompt]
            body["usage"] = {
                "prompt_tokens": prompt,
                "total_tokens": prompt + done,
                "completion_tokens": done,
            }
        if step.finish_reason is not None and not self._include_usage:
            body["system_fingerprint"] = self._fingerprint
        body["kv_transfer_params"] = None
        return sse_event(orjson.dumps(body))

    def final(self) -> bytes | None:
        """The usage-only chunk, when usage was asked for."""
        if not self._include_usage:
            return None
        body = {
            **self._head,
            "model": self._model,
            "choices": [],
            "usage": _final_usage(sum(self._prompt_tokens), sum(self._tokens.values())),
            "system_fingerprint": self._fingerprint,
        }
        return sse_event(orjson.dumps(body))

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        # vLLM writes this one with json.dumps (spaces after separators), unlike chunks.
        return sse_event(json.dumps(body).encode())


class ChatStream:
    """The chunks of one streamed `/v1/chat/completions` request."""

    def __init__(
        self,
        request_id: str,
        created: int,
        model: str,
        fingerprint: str,
        prompt_tokens: int,
        *,
        include_usage: bool,
        continuous_usage: bool,
    ) -> None:
        self._head = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._fingerprint = fingerprint
        self._prompt_tokens = prompt_tokens
        self._include_usage = include_usage
        self._continuous = continuous_usage
        self._tokens: dict[int, int] = {}

    def _usage(self, completion: int) -> dict[str, Any]:
        prompt = self._prompt_tokens
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
            "completion_tokens_details": None,
        }

    def role(self, index: int) -> bytes:
        """The first chunk of a choice: the role and empty content."""
        body: dict[str, Any] = {
            **self._head,
            "choices": [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        if self._continuous:
            body["usage"] = self._usage(0)
        body["prompt_token_ids"] = None
        body["prompt_text"] = None
        return sse_event(orjson.dumps(body))

    def chunk(self, outcome: Outcome, step: Step) -> bytes:
        i = outcome.index
        done = self._tokens.get(i, 0) + step.tokens
        self._tokens[i] = done
        choice: dict[str, Any] = {
            "index": i,
            "delta": {"content": step.text},
            "logprobs": None,
            "finish_reason": step.finish_reason,
        }
        if step.finish_reason is not None:
            choice["stop_reason"] = step.stop_reason
            choice["token_ids"] = None
            choice["weight_versions"] = None
        else:
            choice["token_ids"] = None
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._continuous:
            body["usage"] = self._usage(done)
        if step.finish_reason is not None and not self._include_usage:
            body["system_fingerprint"] = self._fingerprint
        body["kv_transfer_params"] = None
        return sse_event(orjson.dumps(body))

    def final(self) -> bytes | None:
        if not self._include_usage:
            return None
        body = {
            **self._head,
            "choices": [],
            "usage": _final_usage(self._prompt_tokens, sum(self._tokens.values())),
            "system_fingerprint": self._fingerprint,
        }
        return sse_event(orjson.dumps(body))

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        return sse_event(orjson.dumps(body))
