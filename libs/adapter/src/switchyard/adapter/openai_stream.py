"""Streams in OpenAI's chunk format (`chat.completion.chunk`, `text_completion`), as vLLM and
SGLang send them: read here once; each engine's finish reasons and error events stay in its
translation.

Token counts come from the cumulative `usage` such engines put in every chunk when asked
(`stream_options: {include_usage, continuous_usage_stats}`), so a chunk of several tokens
counts them all. An engine that does not is counted one token per text chunk, and the
usage-only last chunk settles the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchyard.adapter.translation import Delta, FinishReason, StreamParser
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb


def _tokens(usage: dict[str, Any] | None, key: str) -> int | None:
    value = usage.get(key) if usage is not None else None
    return value if isinstance(value, int) and value >= 0 else None


class OpenAIStream(StreamParser):
    """One OpenAI-format stream's chunks → deltas."""

    __slots__ = ("_chat", "_counted", "_error", "_finish_reason")

    def __init__(
        self,
        *,
        chat: bool,
        finish_reason: Callable[[str], FinishReason],
        error: Callable[[dict[str, Any]], InferenceError],
    ) -> None:
        """`finish_reason` maps a chunk's (non-empty) reason, raising for one that is an
        error; `error` gives the error an `{"error": ...}` event stands for."""
        self._chat = chat
        self._finish_reason = finish_reason
        self._error = error
        self._counted = 0

    def feed(self, event: str, data: Any) -> Delta | None:
        if not isinstance(data, dict):
            raise InferenceError.engine_failed(
                "the engine sent a stream event that is not an object"
            )
        if "error" in data:
            raise self._error(data)
        text = ""
        finish: FinishReason = pb.FINISH_REASON_UNSPECIFIED
        choices = data.get("choices")
        if choices:
            choice = choices[0]
            if self._chat:
                text = (choice.get("delta") or {}).get("content") or ""
            else:
                text = choice.get("text") or ""
            reason = choice.get("finish_reason")
            if reason:
                finish = self._finish_reason(reason)
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else None
        count = self._count(usage, text)
        if not (text or count or finish or usage is not None):
            return None
        return Delta(
            text=text,
            token_count=count,
            finish_reason=finish,
            prompt_tokens=_tokens(usage, "prompt_tokens"),
            completion_tokens=_tokens(usage, "completion_tokens"),
        )

    def _count(self, usage: dict[str, Any] | None, text: str) -> int:
        """The tokens this chunk adds."""
        if usage is None:
            count = 1 if text else 0
        else:
            completion = _tokens(usage, "completion_tokens")
            count = 0 if completion is None else max(0, completion - self._counted)
        self._counted += count
        return count
