"""An SGLang 0.5.23 simulator: SGLang's HTTP API, served from a CPU.

Start it like `python -m sglang.launch_server`::

    python -m switchyard.enginesim.sglang --model-path M --host H --port P \\
        --served-model-name NAME --context-length L [--max-running-requests N] \\
        [--max-queued-requests Q] [--enable-metrics] [--incremental-streaming-output] \\
        [--enable-deterministic-inference] [--api-key K] [--admin-api-key K] \\
        [--sim-* ...] [--sim-abort-delay S]

Routes: native `POST|PUT /generate`, `POST /abort_request`; OpenAI `POST /v1/completions`,
`POST /v1/chat/completions`, `GET /v1/models[/{model}]`, `POST /v1/tokenize` (`/tokenize`),
`POST /v1/detokenize` (`/detokenize`); `GET /health`, `/health_generate`, `/ready`, `/ping`,
`/model_info` (`/get_model_info`), `/server_info` (`/get_server_info`); `GET /metrics`
with --enable-metrics; and the simulator's own `GET /sim/stats`, `/sim/faults` and
`GET /sim/aborts` (the aborts asked for, by rid and source). With `--api-key` every
route but the probes and `/metrics` needs the bearer token (`auth`).

Modules, one job each: `args` (the command line), `app` (wiring), `runtime` (shared
state), `engine` (requests, scheduling, aborts, output streams), `jobs`, `limits`,
`sampling`, `prompts` (from a request to an engine job), `auth` (the API keys),
`contract` (`/generate`'s JSON gate), `native`, `chat`, `completions`, `tokenization`,
`info` (routes), `openai_base`, `protocol`, `outputs`, `errors` (what the routes share),
`metrics` (Prometheus).
"""
