"""`python -m switchyard.edge` serves; `python -m switchyard.edge keys ...` manages API keys."""

from __future__ import annotations

import sys

USAGE = """usage: python -m switchyard.edge [serve]      run the edge (configured by EDGE_* variables)
       python -m switchyard.edge keys ...     manage API keys (keys --help)"""


def main(argv: list[str] | None = None) -> int:
    """Also the `switchyard-edge` command (its console script calls it without arguments)."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["keys"]:
        from switchyard.edge.auth import main as keys_main

        return keys_main(argv)
    if argv in ([], ["serve"]):
        from switchyard.edge.main import run

        run()
        return 0
    print(USAGE, file=sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
