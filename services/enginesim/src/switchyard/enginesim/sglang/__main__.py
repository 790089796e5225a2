"""`python -m switchyard.enginesim.sglang --model-path M [...]`, like `python -m sglang.launch_server`."""

from switchyard.enginesim.serving import serve
from switchyard.enginesim.sglang.flags import parse
from switchyard.enginesim.sglang.routes import create_app

if __name__ == "__main__":
    config = parse()
    # SGLang listens while Starting (warmup): the load delay is served as 503s, not a closed port.
    serve(create_app(config), config.host, config.port, name="sglang-sim")
