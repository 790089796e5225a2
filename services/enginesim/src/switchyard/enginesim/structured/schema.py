"""JSON documents that validate against a JSON Schema.

A value is built top-down from the schema (combinators resolved first: `$ref`, `allOf`
merged, one `anyOf`/`oneOf` branch picked), then checked with `jsonschema`; a candidate
that fails (a keyword this writer does not steer, such as `not` or `if`) is drawn again a
few times before giving up with UnsupportedSchema. So what is returned always validates.

Objects: a schema that declares `properties` gets those (the required ones, some of the
others), as grammar engines generate them (xgrammar in strict mode and outlines-core add
no undeclared key). A schema without `properties` means any object, as `{"type":
"object"}` does for SGLang's `json_object` (xgrammar: any keys, any values): it gets one
to three keys of its own, named by `propertyNames` or a `patternProperties` pattern when
the schema has them (otherwise words), within `minProperties`/`maxProperties`, with
values from the matching `patternProperties` or `additionalProperties` schemas. If such
keys keep failing validation, a last draw adds none.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Final
from urllib.parse import unquote
from uuid import UUID

from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import Draft202012Validator, validator_for

from switchyard.enginesim.structured.errors import (
    ConstraintError,
    InvalidSchema,
    UnsupportedSchema,
)
from switchyard.enginesim.structured.regex import text_from_regex
from switchyard.enginesim.vocabulary import WORDS

_SOFT_DEPTH: Final = 6  # past this nesting, emit only what the schema requires
_SOFT_VALUES: Final = 64  # likewise past this many values, so recursive schemas stay short
_HARD_DEPTH: Final = 40  # past this, assume a recursive $ref with no way out
_MAX_PARTS: Final = 200  # subschemas one schema may expand into via $ref/allOf
_ATTEMPTS: Final = 16  # draws before giving up on keywords not steered (oneOf overlap, not)
_NEW_KEYS: Final = (1, 3)  # keys of its own for an object schema that declares no properties

_OBJECT_KEYS: Final = ("properties", "required", "additionalProperties", "patternProperties")
_OBJECT_KEYS_MORE: Final = ("minProperties", "maxProperties", "propertyNames")
_ARRAY_KEYS: Final = ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems")
_STRING_KEYS: Final = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS: Final = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_LOWER_BOUNDS: Final = frozenset(
    {"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains"}
)
_UPPER_BOUNDS: Final = frozenset(
    {"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains"}
)
_SUBSCHEMA_KEYS: Final = frozenset(
    {"items", "additionalProperties", "additionalItems", "contains", "propertyNames"}
)


def validate_schema(schema: object) -> None:
    """Raise InvalidSchema unless `schema` is an object and a valid JSON Schema.

    The draft comes from `$schema`; 2020-12 when absent.
    """
    if not isinstance(schema, Mapping):
        raise InvalidSchema(f"a JSON Schema must be an object, not {type(schema).__name__}")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(dict(schema))
    except SchemaError as exc:
        raise InvalidSchema(f"invalid JSON Schema at {exc.json_path}: {exc.message}") from None


def json_from_schema(schema: Mapping[str, Any] | bool, rng: random.Random) -> str:
    """A compact JSON document valid under `schema`.

    Raises InvalidSchema for an invalid schema, UnsupportedSchema for one this writer
    cannot satisfy.
    """
    return SchemaWriter(schema).write(rng)


def json_object(rng: random.Random) -> str:
    """A small JSON object (for `json_object` response formats)."""
    return _dumps(_small_object(rng))


class SchemaWriter:
    """A schema checked once, then written as many times as needed."""

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        if isinstance(schema, bool):
            if not schema:
                raise UnsupportedSchema("the schema `false` has no instances")
            schema = {}
        validate_schema(schema)
        self._root: Mapping[str, Any] = schema
        self._validator: Validator = validator_for(schema, default=Draft202012Validator)(schema)

    def write(self, rng: random.Random) -> str:
        """A compact JSON instance of the schema."""
        problem = ""
        for attempt in range(_ATTEMPTS + 1):
            # The last draw invents no keys: only what the schema names or needs.
            new_keys = attempt < _ATTEMPTS
            try:
                value = _Builder(self._root, rng, new_keys=new_keys).value(self._root, 0)
            except UnsupportedSchema as exc:
                problem = str(exc)
                continue
            error = best_match(self._validator.iter_errors(value))
            if error is None:
                return _dumps(value)
            problem = f"{error.message} (at {error.json_path})"
        raise UnsupportedSchema(f"could not generate an instance of the schema: {problem}")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _small_object(rng: random.Random) -> dict[str, Any]:
    values: tuple[Callable[[], Any], ...] = (
        lambda: _words(rng, 1, 3),
        lambda: rng.randint(0, 100),
        lambda: rng.random() < 0.5,
    )
    return {key: rng.choice(values)() for key in rng.sample(WORDS, rng.randint(1, 3))}


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _scalar(rng: random.Random) -> Any:
    """A value for a schema that allows anything (below the top): words, a number, a flag."""
    kind = rng.randrange(3)
    if kind == 0:
        return _words(rng, 1, 2)
    return rng.randint(0, 100) if kind == 1 else rng.random() < 0.5


class _Builder:
    """One attempt at an instance: a walk down the schema with one random generator."""

    def __init__(self, root: Mapping[str, Any], rng: random.Random, *, new_keys: bool) -> None:
        self._root = root
        self._rng = rng
        self._new_keys = new_keys
        self._values = 0

    def _frugal(self, depth: int) -> bool:
        return depth >= _SOFT_DEPTH or self._values >= _SOFT_VALUES

    def value(self, schema: object, depth: int) -> Any:
        self._values += 1
        if depth > _HARD_DEPTH:
            raise UnsupportedSchema(
                "the schema nests too deeply (a recursive $ref with no base case?)"
            )
        s = self._flatten(schema, depth)
        if "const" in s:
            return s["const"]
        if "enum" in s:
            if not s["enum"]:
                raise UnsupportedSchema("no value satisfies every `enum` of the schema")
            return self._rng.choice(s["enum"])
        match self._kind(s, depth):
            case "object":
                return self._object(s, depth)
            case "array":
                return self._array(s, depth)
            case "string":
                return self._string(s, depth)
            case "integer":
                return self._integer(s)
            case "number":
                return self._number(s)
            case "boolean":
                return self._rng.random() < 0.5
            case "null":
                return None
            case _:  # no type keyword: anything goes
                return _small_object(self._rng) if depth == 0 else _scalar(self._rng)

    def _flatten(self, schema: object, depth: int) -> dict[str, Any]:
        """One schema equivalent to `schema`'s conjunction, with no $ref/allOf/anyOf/oneOf."""
        merged: dict[str, Any] = {}
        pending: deque[object] = deque([schema])
        for _ in range(_MAX_PARTS):
            if not pending:
                return merged
            part = pending.popleft()
            if part is True:
                continue
            if part is False:
                raise UnsupportedSchema("a `false` subschema has no instances")
            if not isinstance(part, Mapping):
                raise UnsupportedSchema(f"not a schema: {part!r}")
            rest = dict(part)
            if "$ref" in rest:
                pending.append(self._resolve(rest.pop("$ref")))
            pending.extend(rest.pop("allOf", ()))
            for key in ("anyOf", "oneOf"):
                if key in rest:
                    pending.append(self._branch(rest.pop(key), depth))
            merged = _merge(merged, rest)
        raise UnsupportedSchema("the schema expands without end (a recursive $ref in allOf?)")

    def _resolve(self, ref: object) -> object:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsupportedSchema(f"only local $refs (#/...) are supported, not {ref!r}")
        node: object = self._root
        for raw in ref[1:].split("/")[1:]:
            key = unquote(raw).replace("~1", "/").replace("~0", "~")
            try:
                if isinstance(node, Mapping):
                    node = node[key]
                elif isinstance(node, list):
                    node = node[int(key)]
                else:
                    raise KeyError(key)
            except (KeyError, IndexError, ValueError):
                raise UnsupportedSchema(f"$ref {ref!r} does not resolve") from None
        return node

    def _branch(self, branches: Sequence[object], depth: int) -> object:
        if not branches:
            raise UnsupportedSchema("an empty anyOf/oneOf has no instances")
        if self._frugal(depth):
            # Deep down, leave recursion: take a branch that refers nowhere (often null).
            flat = [b for b in branches if "$ref" not in json.dumps(b)]
            return (flat or list(branches))[0]
        return self._rng.choice(branches)

    def _kind(self, s: Mapping[str, Any], depth: int) -> str:
        t = s.get("type")
        if isinstance(t, str):
            return t
        if isinstance(t, list):
            if not t:
                raise UnsupportedSchema("no type satisfies every `type` of the schema")
            if self._frugal(depth) and "null" in t:
                return "null"
            choice: str = self._rng.choice(t)
            return choice
        for kind, keys in (
            ("object", _OBJECT_KEYS + _OBJECT_KEYS_MORE),
            ("array", _ARRAY_KEYS),
            ("string", _STRING_KEYS),
            ("number", _NUMBER_KEYS),
        ):
            if any(k in s for k in keys):
                return kind
        return "any"

    def _object(self, s: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = s.get("properties", {})
        required: list[str] = list(s.get("required", []))
        frugal = self._frugal(depth)
        names = [n for n in props if n in required or (not frugal and self._rng.random() < 0.5)]
        names += [n for n in required if n not in props]
        lo: int = s.get("minProperties", 0)
        hi: int | None = s.get("maxProperties")
        spare = [n for n in props if n not in names]
        names += spare[: max(0, lo - len(names))]
        want = lo
        if "properties" not in s and self._new_keys and not frugal:
            want = max(lo, self._rng.randint(*_NEW_KEYS))  # any object: keys of its own
        if hi is not None:
            want = min(want, hi)
        if len(names) < want:
            names += self._invent_keys(s, set(names) | set(props), want - len(names), depth)
        if hi is not None and len(names) > hi:
            optional = [n for n in names if n not in required]
            drop = set(optional[len(optional) - (len(names) - hi) :])
            names = [n for n in names if n not in drop]
        return {n: self.value(self._property_schema(s, n), depth + 1) for n in names}

    def _invent_keys(
        self, s: Mapping[str, Any], taken: set[str], count: int, depth: int
    ) -> list[str]:
        """Up to `count` new keys the schema admits besides its declared properties."""
        patterns = list(s.get("patternProperties", {}))
        closed = s.get("additionalProperties") is False or s.get("unevaluatedProperties") is False
        if closed and not patterns:
            return []
        names_schema = s.get("propertyNames")
        keys: list[str] = []
        for _ in range(4 * count + 4):  # room for collisions; bounded
            if len(keys) >= count:
                break
            key = self._key(names_schema, patterns if closed else (), depth)
            if key is None:
                break
            if key not in taken and key not in keys:
                keys.append(key)
        return keys

    def _key(self, names_schema: object, patterns: Sequence[str], depth: int) -> str | None:
        """A key valid under `propertyNames`, else matching one of `patterns` (when the
        object admits no other key), else a word; None if none can be made."""
        rng = self._rng
        try:
            if names_schema is not None:
                key = self.value({"allOf": [names_schema, {"type": "string"}]}, depth + 1)
            elif patterns:
                key = text_from_regex(rng.choice(patterns), rng)
            else:
                key = rng.choice(WORDS)
        except (UnsupportedSchema, ConstraintError):
            return None
        return key if isinstance(key, str) else None

    def _property_schema(self, s: Mapping[str, Any], name: str) -> object:
        props: Mapping[str, Any] = s.get("properties", {})
        if name in props:
            return props[name]
        matching = [
            sub
            for pattern, sub in s.get("patternProperties", {}).items()
            if _matches(pattern, name)
        ]
        if matching:  # a key must satisfy every pattern it matches
            return matching[0] if len(matching) == 1 else {"allOf": matching}
        return s.get("additionalProperties", True)

    def _array(self, s: Mapping[str, Any], depth: int) -> list[Any]:
        items: object = s.get("items", True)
        prefix: Sequence[object] = s.get("prefixItems", ())
        if isinstance(items, list):  # drafts before 2020-12: tuple form
            prefix, items = items, s.get("additionalItems", True)
        lo: int = s.get("minItems", 0)
        hi: int | None = s.get("maxItems")
        if items is False:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        n = lo if self._frugal(depth) else self._rng.randint(max(lo, 1), max(lo, 3))
        if hi is not None:
            n = min(n, hi)
        contains = s.get("contains")
        unique = bool(s.get("uniqueItems", False))
        out: list[Any] = []
        seen: set[str] = set()
        for _ in range(10 * (n + 1)):
            if len(out) >= n:
                break
            i = len(out)
            sub = prefix[i] if i < len(prefix) else items
            if i == 0 and contains is not None:
                sub = {"allOf": [sub, contains]}
            item = self.value(sub, depth + 1)
            if unique:
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            out.append(item)
        if len(out) < lo:
            raise UnsupportedSchema(f"could not find {lo} distinct array items")
        return out

    def _string(self, s: Mapping[str, Any], depth: int) -> str:
        rng = self._rng
        pattern = s.get("pattern")
        if isinstance(pattern, str):
            try:
                return text_from_regex(pattern, rng)
            except ConstraintError as exc:
                raise UnsupportedSchema(f"pattern: {exc}") from None
        fmt = _FORMATS.get(s.get("format", ""))
        if fmt is not None:
            return fmt(rng)
        lo: int = s.get("minLength", 0)
        hi: int | None = s.get("maxLength")
        text = _words(rng, 1, 3)
        while len(text) < lo:
            text += " " + rng.choice(WORDS)
        if hi is not None and len(text) > hi:
            text = text[:hi].rstrip()
            text += "x" * (lo - len(text))
        return text

    def _integer(self, s: Mapping[str, Any]) -> int:
        lo, lo_excl, hi, hi_excl = _bounds(s)
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_excl else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_excl else math.floor(hi))
        if ilo is None:
            ilo = 0 if ihi is None else ihi - 100
        if ihi is None:
            ihi = ilo + 100
        # An integer multiple of p/q (lowest terms) is a multiple of p.
        step = _fraction(s["multipleOf"]).numerator if "multipleOf" in s else 1
        klo, khi = math.ceil(Fraction(ilo, step)), math.floor(Fraction(ihi, step))
        if klo > khi:
            raise UnsupportedSchema(f"no integer in [{ilo}, {ihi}] is a multiple of {step}")
        return self._rng.randint(klo, khi) * step

    def _number(self, s: Mapping[str, Any]) -> float | int:
        lo, lo_excl, hi, hi_excl = _bounds(s)
        flo, fhi = _default_range(lo, hi)
        if "multipleOf" in s:
            return self._multiple(s["multipleOf"], flo, lo_excl, fhi, hi_excl)
        value = round(self._rng.uniform(flo, fhi), 2)
        if value < flo or value > fhi or (lo_excl and value <= flo) or (hi_excl and value >= fhi):
            value = (flo + fhi) / 2
        return value

    def _multiple(
        self, m: float, lo: float, lo_excl: bool, hi: float, hi_excl: bool
    ) -> float | int:
        mf = _fraction(m)
        klo, khi = math.ceil(_fraction(lo) / mf), math.floor(_fraction(hi) / mf)
        if lo_excl and klo * mf == _fraction(lo):
            klo += 1
        if hi_excl and khi * mf == _fraction(hi):
            khi -= 1
        if klo > khi:
            raise UnsupportedSchema(f"no number in the range is a multiple of {m}")
        for _ in range(20):
            exact = self._rng.randint(klo, khi) * mf
            value: float | int = int(exact) if exact.denominator == 1 else float(exact)
            # Keep only what jsonschema's float arithmetic accepts as a multiple.
            if not isinstance(m, float) or (value / m) == int(value / m):
                return value
        raise UnsupportedSchema(f"could not find a multiple of {m} in the range")


def _matches(pattern: str, text: str) -> bool:
    """JSON Schema's `pattern` semantics: a search, not a full match."""
    try:
        return re.search(pattern, text) is not None
    except re.error as exc:
        raise UnsupportedSchema(f"pattern {pattern!r} does not compile: {exc}") from None


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Both schemas' keywords in one (combinators already removed); best effort."""
    out = dict(a)
    for key, new in b.items():
        if key not in out:
            out[key] = new
            continue
        old = out[key]
        if key in ("properties", "patternProperties"):
            props = dict(old)
            for name, sub in new.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = list(dict.fromkeys([*old, *new]))
        elif key == "type":
            out[key] = _common_types(old, new)
        elif key == "enum":
            out[key] = [v for v in old if v in new]
        elif key == "const" and old != new:
            raise UnsupportedSchema("allOf: two different `const` values")
        elif key in _SUBSCHEMA_KEYS:
            out[key] = {"allOf": [old, new]}
        elif key == "uniqueItems":
            out[key] = bool(old) or bool(new)
        elif _is_number(old) and _is_number(new):
            if key in _LOWER_BOUNDS:
                out[key] = max(old, new)
            elif key in _UPPER_BOUNDS:
                out[key] = min(old, new)
    return out


def _common_types(a: str | list[str], b: str | list[str]) -> list[str]:
    left = [a] if isinstance(a, str) else a
    right = [b] if isinstance(b, str) else b
    out = [t for t in left if t in right]
    if "integer" not in out and (
        ("integer" in left and "number" in right) or ("number" in left and "integer" in right)
    ):
        out.append("integer")
    return out


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _fraction(x: float) -> Fraction:
    return Fraction(str(x))  # decimal semantics: 0.1 is 1/10, as a schema author means


def _bounds(s: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low exclusive, high, high exclusive), for every draft's spelling."""
    lo: float | None = s.get("minimum")
    hi: float | None = s.get("maximum")
    lo_excl = hi_excl = False
    emin, emax = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if isinstance(emin, bool):  # draft 4: a flag on `minimum`
        lo_excl = emin and lo is not None
    elif emin is not None and (lo is None or emin >= lo):
        lo, lo_excl = emin, True
    if isinstance(emax, bool):
        hi_excl = emax and hi is not None
    elif emax is not None and (hi is None or emax <= hi):
        hi, hi_excl = emax, True
    return lo, lo_excl, hi, hi_excl


def _default_range(lo: float | None, hi: float | None) -> tuple[float, float]:
    """Bounds for a draw: the schema's, or a 100-wide window next to the one given."""
    if lo is None:
        return (0, 100) if hi is None else (hi - 100, hi)
    return (lo, lo + 100) if hi is None else (lo, hi)


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


_FORMATS: Final[Mapping[str, Callable[[random.Random], str]]] = {
    "date-time": lambda rng: f"{_date(rng)}T{_time(rng)}",
    "date": _date,
    "time": _time,
    "email": lambda rng: f"{rng.choice(WORDS)}.{rng.choice(WORDS)}@example.com",
    "idn-email": lambda rng: f"{rng.choice(WORDS)}@example.com",
    "uuid": lambda rng: str(UUID(int=rng.getrandbits(128), version=4)),
    "uri": lambda rng: f"https://example.com/{rng.choice(WORDS)}",
    "iri": lambda rng: f"https://example.com/{rng.choice(WORDS)}",
    "uri-reference": lambda rng: f"/{rng.choice(WORDS)}/{rng.choice(WORDS)}",
    "hostname": lambda rng: f"{rng.choice(WORDS)}.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "duration": lambda rng: f"PT{rng.randint(1, 59)}M",
}
