"""Checking a JSON Schema document, shared by the edge and the adapters.

Checking a schema against its metaschema costs about 0.3 ms of CPU per subschema (the
2020-12 metaschema is resolved through `$dynamicRef` for each one), so an unbounded
schema is an unbounded amount of work: a 60,000-property schema once held a process for
37 s. Every schema is therefore measured first, against `SchemaLimits`, by a walk that
stops at the first limit it passes (its cost is bounded by the limits, not by the input).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for


class InvalidJsonSchema(ValueError):
    """The document is not a JSON Schema; the message says where and why."""


class SchemaTooLarge(InvalidJsonSchema):
    """The document passes one of `SchemaLimits`; the message names the limit."""


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    """How big a schema may be. The defaults are the contract's: the adapters enforce them,
    so the edge may lower them but not raise them."""

    max_bytes: int = 128 * 1024  # its JSON text
    max_nodes: int = 2_000  # JSON objects and arrays in it (each object may be a subschema)
    max_depth: int = 32  # nesting of objects and arrays
    max_properties: int = 1_000  # entries of all its `properties` maps together


CONTRACT_LIMITS = SchemaLimits()


def check_bytes(size_bytes: int, limits: SchemaLimits) -> None:
    """Raise `SchemaTooLarge` if the schema's JSON text is longer than the limit (check it
    first: it bounds the cost of everything else)."""
    if size_bytes > limits.max_bytes:
        raise SchemaTooLarge(
            f"the JSON Schema is {size_bytes} bytes long; the limit is {limits.max_bytes} bytes"
        )


def check_shape(schema: Any, limits: SchemaLimits) -> None:
    """Raise `SchemaTooLarge` if `schema` passes the node, depth or properties limit.

    The walk stops at the first limit passed, so after `check_bytes` it costs little.
    """
    nodes = properties = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limits.max_depth:
            raise SchemaTooLarge(f"the JSON Schema nests deeper than {limits.max_depth} levels")
        nodes += 1
        if nodes > limits.max_nodes:
            raise SchemaTooLarge(
                f"the JSON Schema has more than {limits.max_nodes} objects and arrays"
            )
        if isinstance(value, dict):
            declared = value.get("properties")
            if isinstance(declared, dict):
                properties += len(declared)
                if properties > limits.max_properties:
                    raise SchemaTooLarge(
                        f"the JSON Schema declares more than {limits.max_properties} properties"
                    )
            children: Any = value.values()
        else:
            children = value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def check_json_schema(schema: Any) -> dict[str, Any]:
    """Return `schema` if it is a valid JSON Schema object (draft from `$schema`, else 2020-12).

    Expensive (see the module's note): measure it with `check_bytes` and `check_shape` first, and keep it off
    an event loop.
    """
    if not isinstance(schema, dict):
        raise InvalidJsonSchema("the JSON Schema must be a JSON object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidJsonSchema(f"not a valid JSON Schema at {path}: {exc.message}") from None
    return schema


class CheckedSchemas:
    """The schema texts found valid lately, by digest (a bounded LRU).

    Applications send the same schema with every request; remembering that it was valid
    saves the check for all but the first.
    """

    __slots__ = ("_digests", "_size")

    def __init__(self, size: int = 256) -> None:
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    @staticmethod
    def digest(text: bytes) -> bytes:
        return hashlib.blake2b(text, digest_size=16).digest()

    def __contains__(self, digest: bytes) -> bool:
        if digest not in self._digests:
            return False
        self._digests.move_to_end(digest)
        return True

    def add(self, digest: bytes) -> None:
        self._digests[digest] = None
        self._digests.move_to_end(digest)
        if len(self._digests) > self._size:
            self._digests.popitem(last=False)
