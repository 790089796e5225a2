"""The JSON contract gate of `/generate` (`sglang.api.v1`, shared with SGLang's Rust server).

SGLang checks a `/generate` body against its schema before anything else and answers a
violation with HTTP 400 `{"error": "<serde-style text>"}`. Unknown top-level keys are
ignored; unknown `sampling_params` keys are refused. Values may be null (the default).
This module checks the fields a text-generation request uses, with the same wording.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from switchyard.enginesim.serde import unexpected

Check = Callable[[Any], None]


class ContractError(ValueError):
    """The body violates the JSON contract."""


def _invalid(value: Any, expected: str) -> ContractError:
    return ContractError(f"invalid type: {unexpected(value)}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, expected: str = "i64") -> None:
    if not _is_int(value):
        raise _invalid(value, expected)


def _uint(value: Any) -> None:
    _int(value, "u64")
    if value < 0:
        raise ContractError(f"invalid value: integer `{value}`, expected u64")


def _float(value: Any) -> None:
    if not (_is_int(value) or isinstance(value, float)):
        raise _invalid(value, "f64")


def _bool(value: Any, expected: str = "a boolean") -> None:
    if not isinstance(value, bool):
        raise _invalid(value, expected)


def _str(value: Any, expected: str = "a string") -> None:
    if not isinstance(value, str):
        raise _invalid(value, expected)


def _seq(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(value, "a sequence")
    return value


def _map(value: Any, expected: str = "a map") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(value, expected)
    return value


def _string_or_list(value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _str(item)
    else:
        _str(value, "a value or an array of values for StringOrList")


def _bool_or_list(value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _bool(item)
    else:
        _bool(value, "a value or an array of values for BoolOrList")


def _int_or_list(value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _int(item)
    else:
        _int(value, "a value or an array of values for Int64OrList")


def _int_list(value: Any) -> None:
    for item in _seq(value):
        _int(item)


def _token_ids_or_list(value: Any) -> None:
    if not isinstance(value, list):
        raise _invalid(value, "a value or an array of values for TokenIdsOrList")
    # [] and [number, ...] are one prompt; anything else is a batch of prompts.
    if not value or _is_int(value[0]) or isinstance(value[0], float):
        _int_list(value)
    else:
        for row in value:
            _int_list(row)


def _float_map(value: Any) -> None:
    for item in _map(value).values():
        _float(item)


def _string_map(value: Any) -> None:
    for item in _map(value).values():
        _str(item)


def _string_list(value: Any) -> None:
    for item in _seq(value):
        _str(item)


def _watermark(value: Any) -> None:
    fields = {"enabled": _bool, "key": _str, "context_window": _int}
    for key, item in _map(value, "struct WatermarkRequestConfig").items():
        if key not in fields:
            raise _unknown(key, tuple(fields))
        if item is not None:
            fields[key](item)


def _any(value: Any) -> None:
    return None


SAMPLING_FIELDS: Final[dict[str, Check]] = {
    "max_new_tokens": _int,
    "stop": _string_or_list,
    "stop_token_ids": _int_list,
    "stop_regex": _string_or_list,
    "temperature": _float,
    "top_p": _float,
    "top_k": _int,
    "min_p": _float,
    "frequency_penalty": _float,
    "presence_penalty": _float,
    "repetition_penalty": _float,
    "min_new_tokens": _int,
    "n": _int,
    "json_schema": _str,
    "regex": _str,
    "ebnf": _str,
    "structural_tag": _str,
    "ignore_eos": _bool,
    "skip_special_tokens": _bool,
    "spaces_between_special_tokens": _bool,
    "no_stop_trim": _bool,
    "stream_interval": _int,
    "logit_bias": _float_map,
    "sampling_seed": _int,
    "custom_params": _any,
    "beam_width": _int,
    "watermark": _watermark,
    "choice": _string_list,
}

_REQUEST_FIELDS: Final[dict[str, Check]] = {
    "rid": _string_or_list,
    "text": _string_or_list,
    "input_ids": _token_ids_or_list,
    "stream": _bool,
    "return_logprob": _bool_or_list,
    "logprob_start_len": _int_or_list,
    "top_logprobs_num": _int_or_list,
    "return_text_in_logprobs": _bool,
    "priority": _int,
    "max_thinking_tokens": _uint,
    "custom_labels": _string_map,
}


def _unknown(key: str, fields: tuple[str, ...]) -> ContractError:
    listed = ", ".join(f"`{f}`" for f in fields)
    return ContractError(f"unknown field `{key}`, expected one of {listed}")


def _sampling_params(value: Any) -> None:
    for key, item in _map(value, "struct SamplingParams").items():
        check = SAMPLING_FIELDS.get(key)
        if check is None:
            raise _unknown(key, tuple(SAMPLING_FIELDS))
        if item is not None:
            check(item)


def check_generate_body(body: dict[str, Any]) -> str | None:
    """The contract violation in a parsed `/generate` body, or None."""
    try:
        for key, value in body.items():
            if value is None:
                continue
            if key == "sampling_params":
                if isinstance(value, list):
                    for item in value:
                        _sampling_params(item)
                elif isinstance(value, dict):
                    _sampling_params(value)
                else:
                    raise _invalid(value, "a value or an array of values for SamplingParamsOrList")
            elif key in _REQUEST_FIELDS:
                _REQUEST_FIELDS[key](value)
    except ContractError as exc:
        return str(exc)
    return None
