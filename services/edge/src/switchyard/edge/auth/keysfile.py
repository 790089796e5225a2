"""The keys file: its schema, reading it with clear errors, and writing it back.

The same file is what a Kubernetes Secret mounts, so the edge, the CLI and people editing
Secrets by hand all go through this one schema. Error messages name the entry (index and
name) and the field, and never echo a hash or a key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from switchyard.edge.auth.keys import KEY_PREFIX, ApiKey

HEADER = (
    "# Switchyard edge API keys: only SHA-256 hashes are stored.\n"
    "# Manage with: python -m switchyard.edge keys add|list|remove|hash --file PATH\n"
)
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
# Far above any real keys file; stops a wrong mount (a model file, say) from being slurped.
MAX_FILE_BYTES = 4 * 1024 * 1024

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# Defence in depth for error text: anything that looks like a hash or a key is cut short.
_SECRET_LIKE = re.compile(r"[0-9a-fA-F]{32,}|" + re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{32,}")


class KeysFileError(Exception):
    """A keys file that cannot be read (`io_error`) or is not valid; `problems` says each fault."""

    def __init__(
        self, path: Path | str, problems: Sequence[str], *, io_error: bool = False
    ) -> None:
        self.path = str(path)
        self.problems = tuple(redact(p) for p in problems)
        self.io_error = io_error
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.problems) == 1:
            return f"keys file {self.path}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"keys file {self.path} has {len(self.problems)} problems:\n{lines}"


def redact(text: str) -> str:
    return _SECRET_LIKE.sub(lambda m: m[0][:8] + "…", text)


def _must_be_string(value: Any) -> str:
    # YAML turns unquoted 123, 1.5, yes, no, null into non-strings; say so instead of
    # pydantic's bare "valid string" (and never echo the value: it may be a hash).
    if not isinstance(value, str):
        raise PydanticCustomError(
            "yaml_string",
            "must be a string (quote it: YAML reads unquoted numbers, yes/no and null as other types)",
        )
    return value


def _check_sha256(raw: Any) -> str:
    value = _must_be_string(raw)
    if value.startswith(KEY_PREFIX):
        raise PydanticCustomError(
            "key_not_hash",
            "looks like a key, not its hash: store the output of `keys hash` instead, and rotate the key",
        )
    if not _HEX64.fullmatch(value):
        raise PydanticCustomError(
            "sha256_format", "must be 64 hex characters (the SHA-256 of the key, see `keys hash`)"
        )
    return value.lower()


# The constraints come first so they stay on the str schema (with pydantic's usual messages);
# the before-validator wraps them.
Name = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN, max_length=64),
    BeforeValidator(_must_be_string),
]
Sha256 = Annotated[str, BeforeValidator(_check_sha256)]
ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^\S+$"),
    BeforeValidator(_must_be_string),
]
Limit = Annotated[int, Field(gt=0)]
# A budget's period: calendar-aligned `day` or `month` (in the edge's EDGE_BUDGET_TIMEZONE),
# or a rolling window of hours or days (`24h`, `30d`).
_PERIOD = re.compile(r"^(day|month|[1-9][0-9]{0,3}[hd])$")


def _check_period(raw: Any) -> str:
    value = _must_be_string(raw)
    if not _PERIOD.fullmatch(value):
        raise PydanticCustomError(
            "budget_period",
            "unknown period '{value}' (day, month, or a rolling window such as 24h or 30d)",
            {"value": value[:32]},
        )
    return value


Period = Annotated[str, BeforeValidator(_check_period)]
Weight = Annotated[float, Field(gt=0, le=1000)]


class Budget(BaseModel):
    """Tokens a key (or a tenant's keys together) may use per period; input and output
    tokens count with their weights (`output_weight: 4`: output costs 4x input)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tokens: Limit
    period: Period
    input_weight: Weight = 1.0
    output_weight: Weight = 1.0


class KeyEntry(BaseModel):
    """One key as stored: its hash and what it may do."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Name
    tenant: Name
    sha256: Sha256 = Field(repr=False)  # keep full hashes out of logs and tracebacks
    #: `admin`: may call the admin API (`/admin/v1/...`); models only if it also lists some.
    role: Literal["user", "admin"] = "user"
    models: list[ModelName] = Field(default_factory=list)
    rpm: Limit | None = None
    tpm: Limit | None = None
    #: false: this key's requests never use the response cache.
    cache: bool = True
    #: The admission priority class of this key's requests, one of the edge's
    #: EDGE_PRIORITY_CLASSES (checked when the caller gives them); unset: the default class.
    priority: Name | None = None
    #: This key's own token budget (its tenant's, if any, applies as well).
    budget: Budget | None = None
    #: true: the key stays in the file but authenticates as unknown (401) until re-enabled.
    disabled: bool = False

    @field_validator("priority")
    @classmethod
    def _known_class(cls, value: str | None, info: ValidationInfo) -> str | None:
        classes: Collection[str] | None = (info.context or {}).get("classes")
        if value is not None and classes is not None and value not in classes:
            raise PydanticCustomError(
                "priority_class",
                "unknown priority class '{value}' (the edge's classes, EDGE_PRIORITY_CLASSES: "
                "{classes})",
                {"value": value, "classes": ", ".join(classes)},
            )
        return value

    @model_validator(mode="after")
    def _user_has_models(self) -> KeyEntry:
        # An admin key with no models is the safe default (it manages, it does not spend);
        # a user key with none could do nothing at all, which is always a mistake.
        if self.role == "user" and not self.models:
            raise PydanticCustomError(
                "no_models", "models: a user key needs at least one model (or pattern)"
            )
        return self

    def api_key(self) -> ApiKey:
        return ApiKey(
            self.name,
            self.tenant,
            tuple(self.models),
            self.rpm,
            self.tpm,
            self.cache,
            self.priority,
            self.role,
            self.budget,
        )


class TenantEntry(BaseModel):
    """What applies to all of a tenant's keys together."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    budget: Budget | None = None


class KeysDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[KeyEntry]
    #: Per tenant (a tenant is the `tenant` of its keys: one named here must have a key).
    tenants: dict[Name, TenantEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_tenants(self) -> KeysDocument:
        used = {entry.tenant for entry in self.keys}
        unknown = sorted(set(self.tenants) - used)
        if unknown:
            raise PydanticCustomError(
                "unknown_tenant",
                "tenants: {names}: no key has this tenant",
                {"names": ", ".join(repr(n) for n in unknown)},
            )
        return self

    @field_validator("keys")
    @classmethod
    def _unique(cls, entries: list[KeyEntry]) -> list[KeyEntry]:
        problems: list[str] = []
        names: dict[str, int] = {}
        hashes: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if (j := names.setdefault(entry.name, i)) != i:
                problems.append(f"keys[{i}] has the same name {entry.name!r} as keys[{j}]")
            if (j := hashes.setdefault(entry.sha256, i)) != i:
                problems.append(
                    f"keys[{i}] ({entry.name!r}) has the same sha256 as keys[{j}] "
                    f"({entries[j].name!r}): one key cannot have two names"
                )
        if problems:
            raise PydanticCustomError("duplicate", "; ".join(problems))
        return entries


def _allowed_fields(loc: tuple[int | str, ...]) -> str:
    """The fields of the object holding the unknown field at `loc`."""
    if len(loc) == 1:
        model: type[BaseModel] = KeysDocument
    elif len(loc) >= 3 and loc[-2] == "budget":
        model = Budget
    elif loc[0] == "tenants":
        model = TenantEntry
    else:
        model = KeyEntry
    return ", ".join(model.model_fields)


class FileStamp(NamedTuple):
    """What identifies one version of the file: a Secret update swaps the inode, an edit in
    place changes mtime and usually size."""

    dev: int
    ino: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def read_keys_file(
    path: Path, classes: Collection[str] | None = None
) -> tuple[list[KeyEntry], FileStamp]:
    """The keys of `read_keys_document`."""
    document, stamp = read_keys_document(path, classes)
    return document.keys, stamp


def read_keys_document(
    path: Path, classes: Collection[str] | None = None
) -> tuple[KeysDocument, FileStamp]:
    """Read and validate `path` (each key's `priority` one of `classes` when given); the stamp
    is of the very file that was read (fstat, not stat, so a swap between the two cannot pair
    old content with a new stamp)."""
    try:
        with path.open("rb") as f:
            stamp = FileStamp.of(os.fstat(f.fileno()))
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeysFileError(path, [exc.strerror or str(exc)], io_error=True) from exc
    if len(data) > MAX_FILE_BYTES:
        raise KeysFileError(path, [f"larger than {MAX_FILE_BYTES} bytes; is this the keys file?"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeysFileError(path, [f"not UTF-8 text (byte {exc.start})"]) from exc
    return parse_document(text, path, classes), stamp


def parse_keys(
    text: str, source: Path | str = "<keys>", classes: Collection[str] | None = None
) -> list[KeyEntry]:
    return parse_document(text, source, classes).keys


def parse_document(
    text: str, source: Path | str = "<keys>", classes: Collection[str] | None = None
) -> KeysDocument:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise KeysFileError(source, [_yaml_problem(exc)]) from exc
    if raw is None:
        raise KeysFileError(source, ["is empty: expected a mapping with a 'keys' list"])
    if not isinstance(raw, dict):
        raise KeysFileError(source, ["must be a YAML mapping with a 'keys' list"])
    try:
        return KeysDocument.model_validate(raw, context={"classes": classes})
    except ValidationError as exc:
        raise KeysFileError(source, [_pydantic_problem(e, raw) for e in exc.errors()]) from exc


def render_keys(
    entries: Sequence[KeyEntry], tenants: Mapping[str, TenantEntry] | None = None
) -> str:
    """The file text for `entries` (and `tenants`), in a fixed layout; every value that YAML
    could misread is quoted."""
    if not entries:
        return HEADER + "keys: []\n"
    lines = [HEADER.rstrip("\n"), "keys:"]
    for e in entries:
        lines += [
            f"  - name: {_scalar(e.name)}",
            f"    tenant: {_scalar(e.tenant)}",
            f"    sha256: {json.dumps(e.sha256)}",
            f"    models: [{', '.join(json.dumps(m) for m in e.models)}]",
        ]
        if e.role != "user":
            lines.append(f"    role: {e.role}")
        lines += [f"    {k}: {v}" for k, v in (("rpm", e.rpm), ("tpm", e.tpm)) if v is not None]
        if not e.cache:
            lines.append("    cache: false")
        if e.priority is not None:
            lines.append(f"    priority: {_scalar(e.priority)}")
        if e.budget is not None:
            lines.append(f"    budget: {_budget(e.budget)}")
        if e.disabled:
            lines.append("    disabled: true")
    tenants = {name: t for name, t in (tenants or {}).items() if t != TenantEntry()}
    if tenants:
        lines.append("tenants:")
        for name, tenant in sorted(tenants.items()):
            lines.append(f"  {_scalar(name)}:")
            if tenant.budget is not None:
                lines.append(f"    budget: {_budget(tenant.budget)}")
    return "\n".join(lines) + "\n"


def _budget(budget: Budget) -> str:
    # One flow mapping: a budget reads as one line, and the period is always quoted.
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in budget.model_dump().items()) + "}"


def _scalar(value: str) -> str:
    # Plain when YAML reads it back as the same string (dev, team-a); quoted otherwise (123, no).
    return value if yaml.safe_load(value) == value else json.dumps(value)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Built from the parts, not str(exc): that quotes the offending line, which may hold a hash.
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        return f"invalid YAML at {where}{what}"
    return f"invalid YAML: {type(exc).__name__}"


def _pydantic_problem(error: Any, raw: dict[Any, Any]) -> str:
    loc: tuple[int | str, ...] = error["loc"]
    where = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
            if loc[:i] == ("keys",):
                where += _entry_label(raw, part)
        else:
            where += f".{part}" if where else str(part)
    kind = error["type"]
    if kind == "duplicate":
        return str(error["msg"])  # already names each entry involved
    if kind == "missing":
        msg = "required field is missing"
    elif kind == "extra_forbidden":
        allowed = _allowed_fields(loc)
        msg = f"unknown field (allowed: {allowed})"
    else:
        msg = error["msg"]
    return f"{where}: {msg}" if where else msg


def _entry_label(raw: dict[Any, Any], index: int) -> str:
    entries = raw.get("keys")
    if not isinstance(entries, list) or not isinstance(entries[index], dict):
        return ""
    name = entries[index].get("name")
    # Only a name that is valid is echoed: a key pasted into the wrong field must not be.
    if isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) and len(name) <= 64:
        return f" (name {name!r})"
    return ""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML silently keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str | int | float | bool] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool):
            continue  # unhashable keys: construct_mapping reports those itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {redact(str(key))!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)
