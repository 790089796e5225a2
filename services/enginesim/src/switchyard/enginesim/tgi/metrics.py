"""TGI's Prometheus metrics, under its names, buckets and exposition.

The router records with the `metrics` crate and renders with `metrics-exporter-prometheus`,
which writes counters under their plain names (`tgi_request_count`, no `_total` suffix,
unlike `prometheus_client`), so this module keeps its own small per-app registry and
writes the text format itself. Buckets follow `router/src/server.rs`: 35 geometric ones
from 0.15 ms (x1.5) for every `*_duration`, 100 linear ones up to `--max-input-tokens`
for input lengths and up to `--max-total-tokens` for generated and new tokens. The gauges
are read from the engine at scrape time, so they are always the live state.

`--prometheus-port` is the router's second listener, which serves only `GET /metrics`: a
minimal HTTP/1.1 responder (one request per connection, then close) is enough for a
Prometheus scrape and keeps it off the API server's event handling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from switchyard.enginesim.prometheus import Histogram
from switchyard.enginesim.tgi.flags import Config

if TYPE_CHECKING:
    from switchyard.enginesim.tgi.engine import Engine

_HEAD_LIMIT: Final = 16_384
_READ_TIMEOUT_S: Final = 10.0

_HELP: Final = {
    "tgi_request_count": "Total number of requests",
    "tgi_request_success": "Number of successful requests",
    "tgi_request_failure": "Number of failed requests",
    "tgi_request_duration": "Total time spent processing the request",
    "tgi_request_validation_duration": "Time spent validating the request",
    "tgi_request_queue_duration": "Time spent in the queue per request",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
    "tgi_request_generated_tokens": "Generated tokens per request",
    "tgi_request_input_length": "Input token length per request",
    "tgi_request_max_new_tokens": "Maximum new tokens per request",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_size": "Current batch size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
    "tgi_batch_inference_count": "Inference calls per method (prefill or decode)",
    "tgi_batch_inference_success": "Number of successful inference calls per method (prefill or decode)",
    "tgi_batch_forward_duration": "Batch forward duration per method (prefill or decode)",
}
DURATIONS: Final = (
    "tgi_request_duration",
    "tgi_request_validation_duration",
    "tgi_request_queue_duration",
    "tgi_request_inference_duration",
    "tgi_request_mean_time_per_token_duration",
)
#: `err` label values the router uses; a fixed set, so the registry stays bounded.
FAILURE_KINDS: Final = frozenset(
    {"validation", "overloaded", "dropped", "incomplete", "generation", "template"}
)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _lines(name: str, histogram: Histogram, labels: str = "") -> list[str]:
    """A histogram's lines; `labels`: `k="v",` pairs before `le`."""
    out = [f'{name}_bucket{{{labels}le="{b}"}} {n}' for b, n in histogram.cumulative()[:-1]]
    count = sum(histogram.counts)
    tail = f"{{{labels.rstrip(',')}}}" if labels else ""
    out += [
        f'{name}_bucket{{{labels}le="+Inf"}} {count}',
        f"{name}_sum{tail} {_number(histogram.total)}",
    ]
    return [*out, f"{name}_count{tail} {count}"]


class Metrics:
    """One simulator's metrics."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self._engine = engine
        self.request_count = 0
        self.request_success = 0
        self.failures: dict[str, int] = {}
        self.prefills = 0  # prefill batches (one per request here), all successful
        durations = [0.0001 * 1.5 ** (i + 1) for i in range(35)]
        per_input = config.max_input_tokens / 100
        per_total = config.max_total_tokens / 100
        self.histograms: dict[str, Histogram] = {name: Histogram(durations) for name in DURATIONS}
        self.histograms["tgi_request_input_length"] = Histogram(
            [per_input * (x + 1) for x in range(100)]
        )
        for name in ("tgi_request_generated_tokens", "tgi_request_max_new_tokens"):
            self.histograms[name] = Histogram([per_total * (x + 1) for x in range(100)])
        #: `tgi_batch_forward_duration{method="prefill"}`: the modelled prefill of the
        #: uncached input tokens (the simulator has no separate decode batches).
        self.prefill_forward = Histogram(durations)

    def prefilled(self, forward_s: float) -> None:
        """A prefill batch ran (the router counts it before and after the shard call)."""
        self.prefills += 1
        self.prefill_forward.observe(forward_s)

    def failure(self, err: str) -> None:
        if err in FAILURE_KINDS:
            self.failures[err] = self.failures.get(err, 0) + 1

    def observe(self, name: str, value: float) -> None:
        self.histograms[name].observe(value)

    def render(self) -> str:
        scheduler = self._engine.scheduler
        blocks = [
            _block("tgi_request_count", "counter", [f"tgi_request_count {self.request_count}"]),
            _block(
                "tgi_request_success", "counter", [f"tgi_request_success {self.request_success}"]
            ),
        ]
        if self.failures:
            failures = sorted(self.failures.items())
            lines = [f'tgi_request_failure{{err="{k}"}} {v}' for k, v in failures]
            blocks.append(_block("tgi_request_failure", "counter", lines))
        for name, value in (
            ("tgi_queue_size", scheduler.waiting),
            ("tgi_batch_current_size", scheduler.running),
            ("tgi_batch_current_max_tokens", self._engine.batch_tokens),
        ):
            blocks.append(_block(name, "gauge", [f"{name} {value}"]))
        blocks += [_block(n, "histogram", _lines(n, h)) for n, h in self.histograms.items()]
        if self.prefills:  # the router's series appear with the first batch
            for name in ("tgi_batch_inference_count", "tgi_batch_inference_success"):
                blocks.append(
                    _block(name, "counter", [f'{name}{{method="prefill"}} {self.prefills}'])
                )
            name = "tgi_batch_forward_duration"
            blocks.append(
                _block(name, "histogram", _lines(name, self.prefill_forward, 'method="prefill",'))
            )
        return "\n\n".join(blocks) + "\n"


def _block(name: str, kind: str, lines: list[str]) -> str:
    return "\n".join([f"# HELP {name} {_HELP[name]}", f"# TYPE {name} {kind}", *lines])


async def listen(host: str, port: int, render: Callable[[], str]) -> asyncio.Server:
    """Listen on `host:port`; answer `GET /metrics` with `render()`, anything else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
            if parts[:1] == [b"GET"] and path == b"/metrics":
                status, body = b"200 OK", render().encode()
            else:
                status, body = b"404 Not Found", b""
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)
