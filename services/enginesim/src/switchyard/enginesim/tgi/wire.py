"""Request bodies read the way the router's axum `Json` extractor and serde read them.

Rejections carry axum's statuses and plain-text messages: 415 without a JSON content
type, 413 past `--payload-limit`, 400 for a body that is not JSON, 422 for JSON of the
wrong shape (serde's message, prefixed with the field path as `serde_path_to_error`
writes it). Unknown fields are ignored, as serde does by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import Request

from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.tgi.errors import BodyRejection, data_error

_INT_RANGES: Final = {
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "usize": (0, 2**64 - 1),
    "i32": (-(2**31), 2**31 - 1),
}
_F32_MAX: Final = 3.4028234663852886e38


async def read_json(request: Request, limit: int) -> Any:
    """The decoded JSON body, or BodyRejection."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type == "application/json" or content_type.endswith("+json")):
        raise BodyRejection(415, "Expected request with `Content-Type: application/json`")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyRejection(413, "Failed to buffer the request body: length limit exceeded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyRejection(413, "Failed to buffer the request body: length limit exceeded")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyRejection(400, f"Failed to parse the request body as JSON: {exc}") from None


class Fields:
    """Typed access to one JSON object's fields, failing with serde's messages."""

    def __init__(self, value: object, struct: str, path: str = "") -> None:
        if not isinstance(value, Mapping):
            where = f"{path}: " if path else ""
            raise data_error(f"{where}invalid type: {unexpected(value)}, expected struct {struct}")
        self._data: Mapping[str, Any] = value
        self._path = path

    def _where(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _type_error(self, name: str, value: object, expected: str) -> Exception:
        return data_error(
            f"{self._where(name)}: invalid type: {unexpected(value)}, expected {expected}"
        )

    def present(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str) -> Any:
        return self._data.get(name)

    def required(self, name: str) -> Any:
        if name not in self._data:
            where = f"{self._path}: " if self._path else ""
            raise data_error(f"{where}missing field `{name}`")
        return self._data[name]

    def nested(self, name: str, struct: str) -> Fields | None:
        value = self._data.get(name)
        return None if value is None else Fields(value, struct, self._where(name))

    def text(self, name: str) -> str:
        """A required `String`."""
        value = self.required(name)
        if not isinstance(value, str):
            raise self._type_error(name, value, "a string")
        return value

    def string(self, name: str) -> str | None:
        """An `Option<String>`: null or absent is None."""
        value = self._data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._type_error(name, value, "a string")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        """A `bool` with a serde default: absent is `default`, null is an error."""
        if name not in self._data:
            return default
        value = self._data[name]
        if not isinstance(value, bool):
            raise self._type_error(name, value, "a boolean")
        return value

    def optional_flag(self, name: str) -> bool | None:
        """An `Option<bool>`: null or absent is None."""
        value = self._data.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._type_error(name, value, "a boolean")
        return value

    def number(self, name: str) -> float | None:
        """An `Option<f32>`: null or absent is None."""
        value = self._data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._type_error(name, value, "f32")
        if abs(value) > _F32_MAX:
            raise data_error(
                f"{self._where(name)}: invalid value: {unexpected(value)}, expected f32"
            )
        return float(value)

    def integer(self, name: str, kind: str) -> int | None:
        """An `Option<u32|u64|usize|i32>`: null or absent is None."""
        value = self._data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._type_error(name, value, kind)
        lo, hi = _INT_RANGES[kind]
        if not lo <= value <= hi:
            raise data_error(
                f"{self._where(name)}: invalid value: {unexpected(value)}, expected {kind}"
            )
        return value

    def strings(self, name: str, *, nullable: bool) -> list[str] | None:
        """A `Vec<String>` (`nullable`: an `Option<Vec<String>>`)."""
        if name not in self._data:
            return None
        value = self._data[name]
        if value is None and nullable:
            return None
        if not isinstance(value, list):
            raise self._type_error(name, value, "a sequence")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise data_error(
                    f"{self._where(name)}[{i}]: invalid type: {unexpected(item)}, expected a string"
                )
        return value
