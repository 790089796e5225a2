"""Engine simulators: vLLM, SGLang and TGI HTTP APIs served from a CPU.

The engine-agnostic core the engines (`vllm`, `sglang`, `tgi`) build on: `tokenizer`,
`vocabulary` and `chat_template` (the simulated model), `generation` (a prompt and sampling
parameters to a completion), `structured` (outputs that conform to a JSON schema, regex,
choice or grammar), `scheduler` (slots, queue, latency), `faults` and `stats` (what tests
inject and observe, at `/sim/*`), `serving` (disconnects, SSE, API keys, uvicorn), `bodies`
(FastAPI's request bodies), `prometheus`, `serde` and `flags` (the `--sim-*` flags); the
chat features every engine shares: `tools` (the agent-loop rule), `reasoning`, `logprobs`
and `images`. Each engine is the same modules: `flags`, `routes`, `wire`, `errors`, `metrics`,
`engine`, and `chat` (its chat template inputs and tool/reasoning parsers) where it has one.
"""
