"""The vLLM simulator: vLLM 0.33's OpenAI-compatible server, served from a CPU.

`python -m switchyard.enginesim.vllm serve MODEL [flags]` takes `vllm serve`'s command line.
"""

VERSION = "0.33.0"
"""The vLLM release this simulator answers as (`/version`, `system_fingerprint`)."""
