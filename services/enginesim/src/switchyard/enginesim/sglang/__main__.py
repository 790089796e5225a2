"""`python -m switchyard.enginesim.sglang --model-path M [...]`, like `python -m sglang.launch_server`."""

from __future__ import annotations

from switchyard.enginesim.serving import serve
from switchyard.enginesim.sglang.app import build_app
from switchyard.enginesim.sglang.args import parse_args


def main() -> None:
    args = parse_args()
    # SGLang listens while Starting (warmup): the load delay is served as 503s, not a closed port.
    serve(build_app(args), args.host, args.port, name="sglang-sim")


if __name__ == "__main__":
    main()
