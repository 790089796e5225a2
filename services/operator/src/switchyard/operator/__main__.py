"""`python -m switchyard.operator` runs the operator; `... crd` prints the CRD's YAML."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m switchyard.operator",
        description="The Switchyard operator: ModelBackend resources become engine Deployments.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "crd"),
        default="run",
        help="run: the operator (configured by OPERATOR_* variables); crd: print the CRD",
    )
    args = parser.parse_args(argv)
    # Imported here: printing the CRD needs neither kopf nor the clients.
    if args.command == "crd":
        from switchyard.operator.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return

    import uvloop

    from switchyard.operator.runtime import serve
    from switchyard.operator.settings import OperatorSettings
    from switchyard.operator.tracing import COMPONENT
    from switchyard.servicekit.logs import configure_logging
    from switchyard.servicekit.settings import load_settings
    from switchyard.servicekit.telemetry import configure_tracing

    settings = load_settings(OperatorSettings)
    configure_logging(COMPONENT, settings.log_level, settings.log_format)
    tracer_provider = configure_tracing(COMPONENT)
    try:
        uvloop.run(serve(settings))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # exports the spans still queued (after the loop)


if __name__ == "__main__":
    main()
