"""structlog set-up shared by every service: JSON lines in a cluster, readable text locally.

Every line carries the service name and, inside a traced request, the trace and span ids,
so a log line can be joined to its trace. Never pass secrets (API keys) to a logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog
from opentelemetry import trace

LogFormat = Literal["auto", "json", "console"]


def _add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def configure_logging(service: str, level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger for libraries) for one service process."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    if use_json:
        renderer: Any = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        text_renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps_str)
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = text_renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)

    # Libraries log through the stdlib: render their records the same way, and keep
    # them quiet unless something is wrong.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, text_renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def _dumps_str(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()
