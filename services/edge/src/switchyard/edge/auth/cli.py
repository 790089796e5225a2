"""`keys add|list|remove|hash`: manage the keys file that the edge (or its Secret) reads.

Exit codes: 0 ok, 1 I/O error, 2 usage or validation error. A generated key goes to stdout
exactly once (so `KEY=$(... keys add ...)` works); everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from switchyard.edge.auth.keys import MAX_KEY_LENGTH, generate_key, hash_key
from switchyard.edge.auth.keysfile import (
    NAME_PATTERN,
    KeyEntry,
    KeysDocument,
    KeysFileError,
    read_keys_document,
)
from switchyard.edge.auth.writer import KeysFileBusy, update_keys_file
from switchyard.edge.settings import EdgeSettings

PROG = "python -m switchyard.edge keys"
EXIT_IO = 1
EXIT_USAGE = 2
HASH_SHOWN = 8  # hex characters of a hash that `list` shows: enough to tell keys apart


class _UsageError(Exception):
    """A refusal that is the caller's to fix (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the keys CLI. `argv` may start with "keys" (as `python -m switchyard.edge keys ...`
    passes it) or with the subcommand itself; never raises SystemExit."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["keys"]:
        args_list = args_list[1:]
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeysFileError as exc:
        _error(str(exc))
        return EXIT_IO if exc.io_error else EXIT_USAGE
    except KeysFileBusy as exc:
        _error(str(exc))
        return EXIT_IO
    except OSError as exc:
        _error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return EXIT_IO


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Manage Switchyard edge API keys (stored as SHA-256 hashes)."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    add = sub.add_parser("add", help="generate a key, store its hash, print the key once")
    _file_arg(add)
    add.add_argument("--name", required=True, type=_name, help="unique name, shown in logs")
    add.add_argument("--tenant", default="default", type=_name, help="(default: %(default)s)")
    add.add_argument(
        "--role",
        choices=("user", "admin"),
        default="user",
        help="admin: may call the admin API (/admin/v1), and no model unless --models "
        "lists some (default: %(default)s)",
    )
    add.add_argument(
        "--models",
        type=_models,
        help='comma-separated names, aliases or fnmatch patterns; "*" = all '
        "(default: all for a user key, none for an admin key)",
    )
    add.add_argument("--rpm", type=_positive_int, help="requests per minute (default: unlimited)")
    add.add_argument("--tpm", type=_positive_int, help="tokens per minute (default: unlimited)")
    add.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="never answer this key from the response cache, nor keep its answers",
    )
    add.add_argument(
        "--priority",
        type=_name,
        help="admission priority class, one of EDGE_PRIORITY_CLASSES "
        f"(default: {', '.join(_classes())}); unset: the edge's EDGE_DEFAULT_PRIORITY",
    )
    add.set_defaults(command=_add)

    ls = sub.add_parser("list", help="show the keys (hashes cut to their first characters)")
    _file_arg(ls)
    ls.set_defaults(command=_list)

    rm = sub.add_parser("remove", help="delete a key by name")
    _file_arg(rm)
    rm.add_argument("--name", required=True, type=_name)
    rm.set_defaults(command=_remove)

    hs = sub.add_parser(
        "hash", help="read a key on stdin, print its SHA-256 (for hand-made Secrets)"
    )
    hs.set_defaults(command=_hash)
    return parser


def _file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", required=True, type=Path, help="the keys file (YAML)")


def _add(args: argparse.Namespace) -> int:
    path: Path = args.file
    key = generate_key()
    try:
        entry = KeyEntry.model_validate(
            {
                "name": args.name,
                "tenant": args.tenant,
                "sha256": hash_key(key),
                "role": args.role,
                "models": args.models if args.models is not None else _default_models(args.role),
                "rpm": args.rpm,
                "tpm": args.tpm,
                "cache": args.cache,
                "priority": args.priority,
            },
            context={"classes": _classes()},
        )
    except ValidationError as exc:
        raise _UsageError("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from exc

    def add(document: KeysDocument) -> KeysDocument:
        # Checked under the lock: a concurrent add of the same name is refused, not lost.
        if any(e.name == args.name for e in document.keys):
            raise _UsageError(f"a key named {args.name!r} already exists in {path}")
        return document.model_copy(update={"keys": [*document.keys, entry]})

    update_keys_file(path, add, _classes(), missing_ok=True)
    print(key, flush=True)
    _note(f"added key {entry.name!r} (tenant {entry.tenant!r}) to {path}")
    _note("this key will not be shown again: store it now")
    return 0


def _default_models(role: str) -> list[str]:
    # An admin key manages keys; it calls models only when it is given some.
    return [] if role == "admin" else ["*"]


def _list(args: argparse.Namespace) -> int:
    # New columns go last (before the hash): scripts read the others by position.
    header = ["NAME", "TENANT", "MODELS", "RPM", "TPM", "CACHE", "PRIORITY", "ROLE", "STATE"]
    rows = [[*header, "SHA256"]]
    rows += [
        [
            e.name,
            e.tenant,
            ",".join(e.models) or "-",
            "-" if e.rpm is None else str(e.rpm),
            "-" if e.tpm is None else str(e.tpm),
            "on" if e.cache else "off",
            e.priority or "-",
            e.role,
            "disabled" if e.disabled else "active",
            e.sha256[:HASH_SHOWN],
        ]
        for e in read_keys_document(args.file)[0].keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _remove(args: argparse.Namespace) -> int:
    path: Path = args.file

    def remove(document: KeysDocument) -> KeysDocument:
        kept = [e for e in document.keys if e.name != args.name]
        if len(kept) == len(document.keys):
            raise _UsageError(f"no key named {args.name!r} in {path}")
        return document.model_copy(update={"keys": kept})

    update_keys_file(path, remove, _classes())
    _note(f"removed key {args.name!r} from {path}")
    return 0


def _hash(_: argparse.Namespace) -> int:
    # At a terminal, read without echo so the key does not stay on screen.
    raw = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.read()
    key = raw.strip()
    if not key:
        raise _UsageError("no key on stdin")
    if any(c.isspace() for c in key):
        raise _UsageError(
            "a key cannot contain whitespace (it could never be sent as a Bearer token)"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise _UsageError(f"a key is at most {MAX_KEY_LENGTH} characters")
    print(hash_key(key))
    return 0


def _classes() -> tuple[str, ...]:
    """The priority classes keys may name: the edge's, EDGE_PRIORITY_CLASSES as the edge
    reads it (its default when unset)."""
    value = os.environ.get("EDGE_PRIORITY_CLASSES")
    if value is None:
        default: tuple[str, ...] = EdgeSettings.model_fields["priority_classes"].default
        return default
    return tuple(c.strip() for c in value.split(",") if c.strip())


def _name(value: str) -> str:
    if len(value) > 64 or not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use lower-case letters, digits, '.', '_', '-' (first a letter or digit; at most 64)"
        )
    return value


def _models(value: str) -> list[str]:
    models = [m.strip() for m in value.split(",") if m.strip()]
    if not models:
        raise argparse.ArgumentTypeError('list at least one model, or "*" for all')
    if any(any(c.isspace() for c in m) for m in models):
        raise argparse.ArgumentTypeError("model names and patterns cannot contain spaces")
    return models


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive (leave it out for unlimited)")
    return number


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(message, file=sys.stderr)
