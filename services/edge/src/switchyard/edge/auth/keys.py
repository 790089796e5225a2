"""API keys: what a key may do once authenticated, and how keys are made and hashed."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from fnmatch import translate
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchyard.edge.auth.keysfile import Budget

KEY_PREFIX = "sy-"
# No real key is this long; refusing early keeps an oversized header from costing a hash.
MAX_KEY_LENGTH = 1024
# Characters that make a models entry an fnmatch pattern rather than an exact name.
_PATTERN_CHARS = frozenset("*?[")


def hash_key(key: str) -> str:
    """The hex SHA-256 of the whole key string: the only form a key is ever stored in.

    A plain (unsalted, fast) hash is enough because generated keys carry 256 random bits:
    there is nothing to brute-force, and the edge hashes on every request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random key: the prefix makes leaked keys easy to recognise (e.g. by secret scanners)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_pattern(model: str) -> bool:
    return not _PATTERN_CHARS.isdisjoint(model)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An authenticated caller: never holds the key or its hash, so it is safe to log."""

    name: str
    tenant: str
    models: tuple[str, ...]
    rpm: int | None = None
    tpm: int | None = None
    #: Whether this key's deterministic requests use the response cache (`cache: false` in
    #: the keys file opts a key out: its answers are neither looked up nor kept).
    cache: bool = True
    #: The admission priority class of this key's requests (None: the edge's default class).
    priority: str | None = None
    #: `admin` keys may call the admin API; `user` keys never can.
    role: str = "user"
    #: This key's own token budget (`switchyard.edge.budget`; its tenant's applies too).
    budget: Budget | None = None
    # Derived once from `models`: a set for exact names and one compiled regex for the
    # patterns, so `allows` costs O(1) + one match and keeps no per-request cache.
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = [m for m in self.models if is_pattern(m)]
        combined = re.compile("|".join(translate(p) for p in patterns)) if patterns else None
        object.__setattr__(self, "_exact", frozenset(m for m in self.models if not is_pattern(m)))
        object.__setattr__(self, "_pattern", combined)

    def allows(self, model: str) -> bool:
        """Whether this key may use `model` (exact name or alias, or an fnmatch pattern; case-sensitive)."""
        if model in self._exact:
            return True
        return self._pattern is not None and self._pattern.fullmatch(model) is not None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def allows_any(self, *names: str) -> bool:
        """Whether any of `names` is allowed: pass the name the client sent and the served name
        it resolves to, so a key granted either the alias or the served name gets the model."""
        return any(self.allows(n) for n in names)
