"""Keys files for the auth tests, written the way people and the CLI write them."""

from __future__ import annotations

from pathlib import Path

from switchyard.edge.auth import hash_key
from switchyard.edge.auth.keysfile import HEADER

DEV_KEY = "sy-dev-key-for-tests-only-0000000000000000000"
OPS_KEY = "sy-ops-key-for-tests-only-1111111111111111111"


def entry(
    name: str, key: str, *, tenant: str = "local", models: str = '["*"]', extra: str = ""
) -> str:
    """One `keys:` list item as YAML text."""
    return (
        f"  - name: {name}\n"
        f"    tenant: {tenant}\n"
        f'    sha256: "{hash_key(key)}"\n'
        f"    models: {models}\n"
        f"{extra}"
    )


def keys_yaml(*entries: str) -> str:
    return HEADER + "keys:\n" + "".join(entries) if entries else HEADER + "keys: []\n"


def write_keys(path: Path, *entries: str) -> Path:
    path.write_text(keys_yaml(*entries))
    return path
