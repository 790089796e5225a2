"""`python -m switchyard.enginesim ENGINE [ARGS]` (the `switchyard-enginesim` command, the
image's entrypoint): that engine's simulator with the engine's own arguments, the same as
`python -m switchyard.enginesim.ENGINE [ARGS]`, e.g. `switchyard-enginesim vllm serve m`."""

from __future__ import annotations

import pkgutil
import runpy
import sys
from importlib.util import find_spec

import switchyard.enginesim as package


def engines() -> list[str]:
    """The simulated engines: the subpackages that run with `python -m`."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if info.ispkg and find_spec(f"{package.__name__}.{info.name}.__main__") is not None
    )


def main() -> None:
    known = engines()
    engine = sys.argv[1] if len(sys.argv) > 1 else ""
    if engine not in known:
        sys.exit(f"usage: switchyard-enginesim {{{','.join(known)}}} [the engine's arguments]")
    # The engine's module reads its own arguments, as it does under `python -m`.
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    runpy.run_module(f"{package.__name__}.{engine}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
