"""Each path against the floor measured beside it, in the same run: the issue's ratios.

Definitions (the report and the README use these):
- a path's CPU: the user + system time of the path's own processes during the scenario
  (measured part only, warm-up excluded): edge + adapter for Switchyard, the proxy for
  LiteLLM, the simulator for the floor. The simulator behind a Switchyard or LiteLLM path
  is not counted in that path's CPU: it is the floor's.
- CPU µs per token: that CPU ÷ the tokens of the successful answers (streams: the
  completion tokens of their usage chunks, i.e. the tokens relayed).
- CPU µs per request: that CPU ÷ the successful requests.
- inter-token gap: the time between successive text chunks of a stream as the client
  read them, pooled over every chunk of every successful stream of the scenario.

Absolute figures move 3x between sessions on shared machines; ratios to the floor of the
same run do not (as much), so the bars are ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from switchyard.bench.runner import Result
from switchyard.bench.scenarios import CONCURRENCY
from switchyard.bench.stats import added


def path_cpu_s(result: Result) -> float:
    """The path's own CPU (see the module's definitions)."""
    return sum(u.cpu_s for u in result.usage.values())


def cpu_us_per_token(result: Result) -> float:
    tokens = result.summary.tokens
    return path_cpu_s(result) / tokens * 1e6 if tokens else math.nan


def cpu_us_per_request(result: Result) -> float:
    ok = result.summary.ok
    return path_cpu_s(result) / ok * 1e6 if ok else math.nan


def engine_cpu_us_per_token(result: Result) -> float:
    """The simulator's own CPU per token while it served `result`'s path."""
    tokens = result.summary.tokens
    return result.engine.cpu_s / tokens * 1e6 if tokens else math.nan


@dataclass(frozen=True, slots=True)
class Measure:
    """One of the issue's ratios: the path's figure ÷ the floor's, against a bar."""

    key: str
    label: str
    group: Literal["stream", "unary"]
    unit: str
    bar: float
    at_most: bool  # True: the ratio must be ≤ bar; False: ≥ bar
    #: The concurrency the issue's "Done when" names for it.
    issue_concurrency: int

    def figures(self, ours: Result, floor: Result) -> tuple[float, float]:
        """(ours, the floor's), in `unit`."""
        s, f = ours.summary, floor.summary
        if self.key == "cpu_per_token":
            return cpu_us_per_token(ours), cpu_us_per_token(floor)
        if self.key == "tokens_per_s":
            return s.tokens_per_s, f.tokens_per_s
        if self.key == "gap_p99":
            return s.gap_p99_s * 1e3, f.gap_p99_s * 1e3
        if self.key == "added_p50":
            return added(s, f).p50_s * 1e3, f.latency_p50_s * 1e3
        return cpu_us_per_request(ours), cpu_us_per_request(floor)

    def holds(self, ratio: float) -> bool:
        if math.isnan(ratio):
            return False
        return ratio <= self.bar if self.at_most else ratio >= self.bar

    @property
    def bar_text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bar:g}x"


MEASURES = (
    Measure("cpu_per_token", "CPU per token ÷ floor's", "stream", "µs", 0.5, True, 256),
    Measure("tokens_per_s", "tokens/s ÷ floor's", "stream", "tokens/s", 0.9, False, 256),
    Measure("gap_p99", "inter-token gap p99 ÷ floor's", "stream", "ms", 1.1, True, 1),
    Measure("added_p50", "added latency p50 ÷ floor's p50", "unary", "ms", 2.0, True, 1),
    Measure("cpu_per_request", "CPU per request ÷ floor's", "unary", "µs", 2.0, True, 1),
)


def _ratio(ours: float, floor: float) -> float:
    if math.isnan(ours) or math.isnan(floor) or floor <= 0:
        return math.nan
    return ours / floor


def _order(path: str) -> tuple[bool, str]:
    return (not path.startswith("switchyard-"), path)


def vs_floor(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Every path but the floor, at each concurrency: the issue's five ratios, each with its
    bar and whether it holds; `done_when` marks the ones the issue's "Done when" names."""
    by_key = {(r.path, r.scenario.name): r for r in results}
    paths = sorted({r.path for r in results if r.path != "floor"}, key=_order)
    checks: list[dict[str, Any]] = []
    for path in paths:
        for c in CONCURRENCY:
            for m in MEASURES:
                name = f"{m.group}-c{c}"
                ours, floor = by_key.get((path, name)), by_key.get(("floor", name))
                if ours is None or floor is None:
                    continue
                mine, theirs = m.figures(ours, floor)
                ratio = _ratio(mine, theirs)
                check: dict[str, Any] = {
                    "path": path,
                    "scenario": name,
                    "concurrency": c,
                    "measure": m.key,
                    "target": f"{m.label} {m.bar_text}, {name}",
                    "unit": m.unit,
                    "ours": _round(mine),
                    "floor": _round(theirs),
                    "ratio": _round(ratio),
                    "bar": m.bar,
                    "holds": m.holds(ratio),
                    "done_when": c == m.issue_concurrency,
                }
                if m.key == "cpu_per_token":
                    # The simulator's own while it served this path: beside the floor's.
                    check["engine"] = _round(engine_cpu_us_per_token(ours))
                checks.append(check)
    return checks


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return "-"
    if check["ratio"] is None:
        return "-"
    verdict = "yes" if check["holds"] else "NO"
    text = f"{check['ratio']:.2f}x {verdict}"
    return f"**{text}**" if check["done_when"] else text


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.2f} {unit}"


def vs_floor_lines(results: Sequence[Result]) -> list[str]:
    """The markdown section: one row per path and concurrency, then the issue's lines."""
    checks = vs_floor(results)
    if not checks:
        return []
    lines = [
        "## Against the floor (ratios to the floor measured in the same run)",
        "",
        "CPU = the path's own processes (edge + adapter; proxy), not the simulator behind "
        "it; the floor's = the simulator's own. Per token: ÷ the completion tokens relayed "
        "(streams, from their usage chunks); per request: ÷ the successful requests "
        "(non-streaming). Inter-token gap: between successive text chunks of a stream as "
        "the client read them. Added latency: the path's p50 minus the floor's, ÷ the "
        "floor's p50. Streams: `stream-cN`; requests: `unary-cN`. **Bold**: the "
        "concurrency the issue's “Done when” names.",
        "",
        "| path | concurrency | "
        + " | ".join(f"{m.label} ({m.bar_text})" for m in MEASURES)
        + " |",
        "|---|---|" + "---|" * len(MEASURES),
    ]
    by_row = {(c["path"], c["concurrency"], c["measure"]): c for c in checks}
    for path in dict.fromkeys(c["path"] for c in checks):
        for conc in CONCURRENCY:
            cells = [by_row.get((path, conc, m.key)) for m in MEASURES]
            if all(cell is None for cell in cells):
                continue
            lines.append(f"| {path} | {conc} | " + " | ".join(_cell(x) for x in cells) + " |")
    lines += ["", "The issue's “Done when” lines:", ""]
    for c in checks:
        if not c["done_when"]:
            continue
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
        verdict = "yes" if c["holds"] else "NO"
        engine = ""
        if "engine" in c:
            engine = f" (the simulator behind it: {_figure(c['engine'], c['unit'])})"
        lines.append(
            f"- {c['path']}: {c['target']}: {_figure(c['ours'], c['unit'])} against the "
            f"floor's {_figure(c['floor'], c['unit'])}{engine} = {ratio}: {verdict}"
        )
    lines.append("")
    return lines


def vs_bare(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Each Switchyard path against the bare relay (`bare`) of the same run, at each
    concurrency: its CPU per token (streams) and per request (whole answers) over the bare
    relay's, and the latency it adds over the bare relay's p50: what Switchyard's own work
    costs beyond its transports'."""
    by_key = {(r.path, r.scenario.name): r for r in results}
    paths = sorted({r.path for r in results if r.path.startswith("switchyard-")})
    rows: list[dict[str, Any]] = []
    for path in paths:
        for c in CONCURRENCY:
            row: dict[str, Any] = {"path": path, "concurrency": c}
            stream = (by_key.get((path, f"stream-c{c}")), by_key.get(("bare", f"stream-c{c}")))
            if stream[0] is not None and stream[1] is not None:
                ours, bare = cpu_us_per_token(stream[0]), cpu_us_per_token(stream[1])
                row |= {"cpu_per_token": _round(ours), "bare_cpu_per_token": _round(bare)}
                row["cpu_per_token_ratio"] = _round(_ratio(ours, bare))
            unary = (by_key.get((path, f"unary-c{c}")), by_key.get(("bare", f"unary-c{c}")))
            if unary[0] is not None and unary[1] is not None:
                ours, bare = cpu_us_per_request(unary[0]), cpu_us_per_request(unary[1])
                row |= {"cpu_per_request": _round(ours), "bare_cpu_per_request": _round(bare)}
                row["cpu_per_request_ratio"] = _round(_ratio(ours, bare))
                extra = unary[0].summary.latency_p50_s - unary[1].summary.latency_p50_s
                row["p50_over_bare_ms"] = _round(extra * 1e3)
            if len(row) > 2:
                rows.append(row)
    return rows


def vs_bare_lines(results: Sequence[Result]) -> list[str]:
    """The markdown section of `vs_bare` (none without the bare relay)."""
    rows = vs_bare(results)
    if not rows:
        return []
    lines = [
        "## Against the bare relay (Switchyard's own work, same run)",
        "",
        "The bare relay moves the same bytes over the same transports (uvicorn, grpc.aio, "
        "aiohttp) and does nothing else: what Switchyard spends beyond it is its own work "
        "(keys, limits, routing, validation, translation, protobuf, logs, metrics); what "
        "the bare relay spends, no edge and adapter built this way can shed.",
        "",
        "| path | concurrency | CPU µs per token, ours / bare (ratio) | CPU µs per request, "
        "ours / bare (ratio) | p50 over the bare relay's |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        token = _pair(row, "cpu_per_token")
        request = _pair(row, "cpu_per_request")
        extra = row.get("p50_over_bare_ms")
        extra_text = "-" if extra is None else f"{extra:+.2f} ms"
        lines.append(
            f"| {row['path']} | {row['concurrency']} | {token} | {request} | {extra_text} |"
        )
    lines.append("")
    return lines


def _pair(row: dict[str, Any], key: str) -> str:
    ours, bare, ratio = row.get(key), row.get(f"bare_{key}"), row.get(f"{key}_ratio")
    if ours is None or bare is None or ratio is None:
        return "-"
    return f"{ours:,.1f} / {bare:,.1f} ({ratio:.2f}x)"
