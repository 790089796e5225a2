"""The context-length rules of SGLang's tokenizer manager (`_validate_one_request`) and
scheduler (`init_req_max_new_tokens`), with their messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ContextLimits:
    context_length: int
    allow_auto_truncate: bool = False

    def check(self, prompt_tokens: int, max_new_tokens: int | None) -> tuple[int, int | None]:
        """(prompt tokens, max_new_tokens) that fit; ValueError unless auto-truncating."""
        context = self.context_length
        if prompt_tokens >= context:
            if not self.allow_auto_truncate:
                raise ValueError(
                    f"The input ({prompt_tokens} tokens) is longer than the "
                    f"model's context length ({context} tokens)."
                )
            prompt_tokens = context
        if max_new_tokens is not None and max_new_tokens + prompt_tokens > context:
            if not self.allow_auto_truncate:
                total = max_new_tokens + prompt_tokens
                raise ValueError(
                    f"Requested token count exceeds the model's maximum context length "
                    f"of {context} tokens. You requested a total of {total} "
                    f"tokens: {prompt_tokens} tokens from the input messages and "
                    f"{max_new_tokens} tokens for the completion. Please reduce the number "
                    f"of tokens in the input messages or the completion to fit within the limit."
                )
            max_new_tokens = max(0, context - prompt_tokens)
        return prompt_tokens, max_new_tokens

    def budget(self, prompt_tokens: int, max_new_tokens: int | None) -> int:
        """What the scheduler lets a request generate: it keeps the context's last slot
        free (max_req_len = context - 1), and None means as much as fits."""
        room = max(0, self.context_length - 1 - prompt_tokens - 1)
        return room if max_new_tokens is None else min(max_new_tokens, room)
