"""The SGLang simulator: SGLang 0.5.23's HTTP API, served from a CPU.

`python -m switchyard.enginesim.sglang --model-path M [flags]` takes
`python -m sglang.launch_server`'s command line.
"""

VERSION = "0.5.23"
"""The SGLang release this simulator answers as (`/server_info`)."""
