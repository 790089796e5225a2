"""`python -m switchyard.enginesim.tgi`: a simulated `text-generation-launcher`."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.enginesim.serving import serve
from switchyard.enginesim.tgi.app import build_app
from switchyard.enginesim.tgi.config import parse


def main(argv: Sequence[str] | None = None) -> None:
    config, sim = parse(argv)
    app = build_app(config, sim)
    # Like the launcher: nothing listens until the model is loaded and warmed up.
    serve(
        app,
        config.hostname,
        config.port,
        delay_listen_s=sim.latency.load_delay_s,
        name=f"tgi-sim {config.model_id}",
    )


if __name__ == "__main__":
    main()
