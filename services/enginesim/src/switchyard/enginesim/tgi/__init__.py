"""TGI (text-generation-inference 3.3) simulated on a CPU.

`python -m switchyard.enginesim.tgi --model-id M --port P ...` takes the
`text-generation-launcher` flags and serves the router's HTTP API: the native
`/generate` and `/generate_stream` (SSE framed `data:` without a space, no `[DONE]`),
the OpenAI layer, `/info`, `/health`, Prometheus metrics under TGI's names, TGI's
validation rules and messages (lengths checked one 1024-token chunk at a time), JSON
grammars as outlines-core reads them, `details.prefill` only with
`--enable-prefill-logprobs`, `--api-key` on the generation routes, and its overload
answer (429 past `--max-concurrent-requests`).
"""

VERSION = "3.3.5"
"""The TGI release this simulator answers as (`/info`, `system_fingerprint`)."""
