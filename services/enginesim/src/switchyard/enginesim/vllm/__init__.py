"""The vLLM simulator: vLLM 0.33's OpenAI-compatible server, served from a CPU.

`python -m switchyard.enginesim.vllm serve MODEL [flags]` takes `vllm serve`'s command line.
Modules: `cli` (flags → `ServeConfig`), `protocol` (request bodies), `errors` (vLLM's error
bodies and statuses), `inputs` (a request → prompts and sampling parameters, with vLLM's
checks), `engine` (admission, queueing, pacing), `responses` (response and chunk bodies),
`metrics` (vLLM's Prometheus families), `middleware` (API key, request-id headers) and
`api` (the routes).
"""
