"""Engine simulators: vLLM, SGLang and TGI HTTP APIs served from a CPU.

The engine-neutral core the front-ends (`vllm`, `sglang`, `tgi`) build on:
`tokenizer` and `chat_template` (the simulated model), `structured` (outputs that conform
to a JSON schema, regex, choice or grammar), `generation` (prompt and sampling parameters
to a completion), `scheduler` (slots, queue, latency), `stats` (what tests observe, at
`/sim/stats`), `serving` (disconnects, SSE, uvicorn) and `cli` (the `--sim-*` flags).
"""
