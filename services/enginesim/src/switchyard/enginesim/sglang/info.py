"""Health and information routes (`entrypoints/http_server.py`).

SGLang listens before it is ready: its status is `Starting` until the warmup request has
run, and `/health`, `/health_generate`, `/ready` and `/ping` answer 503 meanwhile (the
simulator is Starting for --sim-load-delay). Once up, `/health` (= `/health_generate`)
submits a one-token generation and polls once a second for engine output, so even a
healthy answer takes a second; `/ready` and `/ping` are flag checks. Generation requests
sent while Starting are accepted and served once the model is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim.serving import OrjsonResponse
from switchyard.enginesim.sglang.runtime import Runtime

log = logging.getLogger("switchyard.enginesim.sglang")

VERSION: Final = "0.5.23"
#: SGLang's /health sleeps this long before it looks for the probe's output.
HEALTH_POLL_S: Final = 1.0


class InfoApi:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/health_generate", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/ping", self.ready, methods=["GET"]),
            Route("/model_info", self.model_info, methods=["GET"]),
            Route("/get_model_info", self.get_model_info, methods=["GET"]),
            Route("/server_info", self.server_info, methods=["GET"]),
            Route("/get_server_info", self.get_server_info, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        if not self._rt.up:
            return Response(status_code=503)
        await asyncio.sleep(HEALTH_POLL_S)
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self._rt.up else 503)

    async def model_info(self, request: Request) -> Response:
        args = self._rt.args
        return OrjsonResponse(
            {
                "model_path": args.model_path,
                "served_model_name": args.served_model_name,
                "tokenizer_path": args.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "load_format": "auto",
                "reasoning_parser": None,
                "tool_call_parser": None,
                "disaggregation_mode": "null",
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "model_type": "qwen2",
                "architectures": ["Qwen2ForCausalLM"],
            }
        )

    async def get_model_info(self, request: Request) -> Response:
        log.warning(
            "Endpoint '/get_model_info' is deprecated and will be removed in a future version. "
            "Please use '/model_info' instead."
        )
        return await self.model_info(request)

    async def server_info(self, request: Request) -> Response:
        rt = self._rt
        args = rt.args
        server_args: dict[str, Any] = {
            "model_path": args.model_path,
            "served_model_name": args.served_model_name,
            "host": args.host,
            "port": args.port,
            "context_length": args.context_length if args.context_length_set else None,
            "tp_size": args.tp_size,
            "mem_fraction_static": args.mem_fraction_static,
            "max_running_requests": args.max_running_requests,
            "max_queued_requests": args.max_queued_requests,
            "max_total_tokens": args.max_total_tokens,
            "enable_metrics": args.enable_metrics,
            "incremental_streaming_output": args.incremental_streaming_output,
            "allow_auto_truncate": args.allow_auto_truncate,
            "enable_trace": args.enable_trace,
            "enable_deterministic_inference": args.enable_deterministic_inference,
        }
        engine = rt.engine
        return OrjsonResponse(
            {
                **server_args,
                "max_total_num_tokens": args.max_total_tokens,
                "max_req_input_len": args.context_length - 1 - 5,
                "startup_time": rt.started_at,
                "internal_states": [
                    {
                        "num_running_reqs": engine.running,
                        "num_queue_reqs": engine.waiting,
                        "num_used_tokens": engine.used_tokens,
                        "gen_throughput": engine.gen_throughput(),
                    }
                ],
                "version": VERSION,
                "frontend": "python",
            }
        )

    async def get_server_info(self, request: Request) -> Response:
        log.warning(
            "Endpoint '/get_server_info' is deprecated and will be removed in a future version. "
            "Please use '/server_info' instead."
        )
        return await self.server_info(request)

    def _card(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": name,
            "parent": None,
            "max_model_len": self._rt.args.context_length,
        }

    async def models(self, request: Request) -> Response:
        return OrjsonResponse(
            {"object": "list", "data": [self._card(self._rt.args.served_model_name)]}
        )

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self._rt.args.served_model_name:
            error = {
                "message": f"The model '{name}' does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            return OrjsonResponse({"error": error}, status_code=404)
        return OrjsonResponse(self._card(name))
