"""Error wording of Rust's serde, which SGLang's request contract and TGI's router both speak."""

from __future__ import annotations

import orjson


def unexpected(value: object) -> str:
    """How serde names a JSON value it did not expect (`invalid type: <this>, expected ...`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {orjson.dumps(value).decode()}"
    if isinstance(value, list):
        return "sequence"
    return "map"
