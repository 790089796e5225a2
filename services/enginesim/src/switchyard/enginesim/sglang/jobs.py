"""From a prompt and raw sampling parameters to an engine job, in SGLang's order:
the context-length check (`_validate_one_request`), then `SamplingParams` verification.
Every refusal is a ValueError carrying SGLang's message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchyard.enginesim.sglang import prompts
from switchyard.enginesim.sglang.engine import Job
from switchyard.enginesim.sglang.limits import ContextLimits
from switchyard.enginesim.sglang.prompts import Prompt
from switchyard.enginesim.sglang.sampling import parse_sampling


async def build_job(
    limits: ContextLimits,
    prompt: Prompt,
    sampling_params: Mapping[str, Any],
    *,
    rid: str,
    stream: bool,
    traceparent: str | None,
) -> Job:
    requested = sampling_params.get("max_new_tokens")
    kept, max_new_tokens = limits.check(prompt.tokens, requested)
    if max_new_tokens != requested:  # shortened by --allow-auto-truncate
        sampling_params = {**sampling_params, "max_new_tokens": max_new_tokens}
    sampling = parse_sampling(sampling_params)
    if kept < prompt.tokens:
        prompt = await prompts.truncated(prompt, kept)
    return Job(
        rid=rid,
        prompt=prompt.text,
        prompt_tokens=prompt.tokens,
        sampling=sampling,
        max_new_tokens=limits.budget(prompt.tokens, sampling.max_new_tokens),
        stream=stream,
        traceparent=traceparent,
    )
