"""Canonical inference requests (the contract's GenerateRequest) for tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from switchyard.inference.v1 import inference_pb2 as pb

#: (role, content) or (role, content, name)
Message = tuple[str, str] | tuple[str, str, str]


def generate_request(
    model: str,
    *,
    prompt: str | None = None,
    messages: Sequence[Message] = (),
    request_id: str = "",
    **sampling: Any,
) -> pb.GenerateRequest:
    """A request with a prompt or chat messages; keyword arguments set `sampling` fields."""
    request = pb.GenerateRequest(request_id=request_id, model=model)
    if prompt is not None:
        request.prompt = prompt
    for role, content, *name in messages:
        request.chat.messages.add(role=role, content=content, name=name[0] if name else "")
    for field, value in sampling.items():
        if field == "stop":
            request.sampling.stop.extend(value)
        else:
            setattr(request.sampling, field, value)
    return request
