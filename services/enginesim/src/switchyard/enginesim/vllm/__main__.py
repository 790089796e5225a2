"""`python -m switchyard.enginesim.vllm serve MODEL [flags]`: the simulator, like `vllm serve`."""

from __future__ import annotations

from switchyard.enginesim.serving import serve
from switchyard.enginesim.vllm.api import create_app
from switchyard.enginesim.vllm.cli import parse_config


def main() -> None:
    config = parse_config()
    # vLLM binds only once its model is loaded: the port stays closed during the load.
    serve(
        create_app(config),
        config.host,
        config.port,
        delay_listen_s=config.sim.latency.load_delay_s,
        name="enginesim-vllm",
    )


if __name__ == "__main__":
    main()
