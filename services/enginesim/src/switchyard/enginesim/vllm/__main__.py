"""`python -m switchyard.enginesim.vllm serve MODEL [flags]`: the simulator, like `vllm serve`."""

from switchyard.enginesim.serving import serve
from switchyard.enginesim.vllm.flags import parse
from switchyard.enginesim.vllm.routes import create_app

if __name__ == "__main__":
    config = parse()
    # vLLM binds only once its model is loaded: the port stays closed during the load.
    delay = config.sim.latency.load_delay_s
    serve(create_app(config), config.host, config.port, delay_listen_s=delay, name="enginesim-vllm")
