"""Reading an engine output the way SGLang's HTTP layers do."""

from __future__ import annotations

from typing import Any

from switchyard.enginesim.sglang.engine import FinishReason


def abort_error(finish: FinishReason | None) -> tuple[int, str] | None:
    """(status, message) of an abort SGLang reports as an error: one with a status code
    of 400 or more (a full queue, a bad grammar). A plain abort (`/abort_request`) is None:
    it ends the output normally, with finish_reason "abort"."""
    if finish is None or finish.get("type") != "abort":
        return None
    status = finish.get("status_code")
    if isinstance(status, int) and 400 <= status < 600:
        return status, str(finish.get("message", "Generation aborted."))
    return None


def matched_stop(finish: FinishReason | None) -> Any:
    """The OpenAI routes' `matched_stop`: the stop string or token id that ended the output."""
    return finish.get("matched") if finish is not None else None


def finish_type(finish: FinishReason | None) -> str | None:
    return str(finish["type"]) if finish is not None else None
