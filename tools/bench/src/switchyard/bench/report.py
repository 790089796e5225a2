"""The results: a markdown report (tables and the issue's targets) and a JSON document."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import psutil

from switchyard.bench.multiturn import multiturn_json, multiturn_lines
from switchyard.bench.noisy import BAR, BUSY, NoisyResult
from switchyard.bench.paths import SIMS, cache_mode, workers
from switchyard.bench.ratios import (
    cpu_us_per_request,
    cpu_us_per_token,
    engine_cpu_us_per_token,
    vs_bare,
    vs_bare_lines,
    vs_floor,
    vs_floor_lines,
)
from switchyard.bench.runner import Result, Run, noise_pct
from switchyard.bench.scenarios import (
    CACHE_CONCURRENCY,
    CONCURRENCY,
    GROUPS,
    NOISY_FLOOD,
    NOISY_SHARE,
)
from switchyard.bench.stats import Summary, added

MIB = 1024 * 1024
#: The issue's bar: a cache hit at least this many times faster than the engine's answer.
HIT_SPEEDUP = 5.0
_GROUPS = {
    "unary": "Non-streaming, 16 tokens, simulator without latency (overhead)",
    "stream": "Streaming, 256 tokens, simulator at TTFT {ttft} ms / ITL {itl} ms",
    "open": "Open loop, non-streaming, simulator without latency",
    "memory": "Memory: 1,000 concurrent long-lived streams (TTFT {ttft_idle} ms / ITL {itl_idle} ms)",
    "tools": "Tools: non-streaming, one function tool, tool_choice required, simulator without "
    "latency",
    "embed": "Embeddings: 1 or 32 texts per request (xN), base64, vLLM simulator as a pooling "
    "model without latency (tokens/s: input tokens)",
    "cache": "Response cache: one chat request at temperature 0 (16 tokens whole, 64 streamed), "
    "simulator at TTFT {ttft} ms / ITL {itl} ms; miss = a new prompt each time, hit = the same",
}


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
    }


def _commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1e3:.1f}" if abs(seconds) < 10 else f"{seconds * 1e3:.0f}"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _floor_of(results: Sequence[Result], result: Result) -> Result | None:
    return next(
        (r for r in results if r.path == "floor" and r.scenario.name == result.scenario.name),
        None,
    )


def _rss(result: Result) -> str:
    return " + ".join(f"{role} {u.peak_rss / MIB:.0f}" for role, u in result.usage.items())


def _client_cpu(result: Result) -> float:
    duration = result.summary.duration_s
    return result.client_cpu_s / duration * 100 if duration > 0 else math.nan


def _others(result: Result) -> str:
    """The kept run's noise; after a rerun, the other run's too."""
    noise = noise_pct(result)
    if not result.rerun:
        return f"{noise:.0f}"
    dropped = max(result.noise_pcts)
    return f"{noise:.0f} ↻ ({dropped:.0f} dropped)"


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _gaps(summary: Summary) -> str:
    if math.isnan(summary.gap_p50_s):
        return "-"
    return f"{_ms(summary.gap_p50_s)} / {_ms(summary.gap_p99_s)}"


def _row(results: Sequence[Result], r: Result) -> str:
    s = r.summary
    base = _floor_of(results, r)
    if base is None or r.path == "floor":
        add50 = add99 = "-"
    else:
        delta = added(s, base.summary)
        add50, add99 = _ms(delta.p50_s), _ms(delta.p99_s)
    ok = f"{s.ok}/{s.requests}" + (" ⏱" if r.capped else "")
    if s.errors:
        ok += " (" + ", ".join(f"{k}: {v}" for k, v in s.errors.items()) + ")"
    cells = [
        r.path,
        r.scenario.name,
        ok,
        _ms(s.latency_p50_s),
        _ms(s.latency_p99_s),
        add50,
        add99,
        _ms(s.ttft_p50_s),
        _ms(s.ttft_p99_s),
        _gaps(s),
        _rate(s.requests_per_s),
        _rate(s.tokens_per_s),
        _us(cpu_us_per_request(r)),
        _us(cpu_us_per_token(r)),
        _rss(r),
        f"{_client_cpu(r):.0f}",
        _others(r),
    ]
    return "| " + " | ".join(cells) + " |"


_HEADER = (
    "| path | scenario | ok/sent | p50 ms | p99 ms | added p50 ms | added p99 ms "
    "| TTFT p50 ms | TTFT p99 ms | gap p50 / p99 ms | req/s | tokens/s | CPU µs / req "
    "| CPU µs / token | peak RSS MiB | client CPU % | others CPU % |\n|" + "---|" * 17
)


def _group_title(group: str) -> str:
    stream, idle = SIMS["stream"], SIMS["idle"]
    return _GROUPS[group].format(
        ttft=round(stream.ttft_s * 1e3),
        itl=round(stream.itl_s * 1e3),
        ttft_idle=round(idle.ttft_s * 1e3),
        itl_idle=round(idle.itl_s * 1e3),
    )


def _memory_rows(results: Iterable[Result]) -> list[str]:
    rows = [
        "| path | role | RSS before MiB | peak RSS MiB | RSS after MiB | processes |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for role, u in r.usage.items():
            rows.append(
                f"| {r.path} | {role} | {u.start_rss / MIB:.0f} | {u.peak_rss / MIB:.0f} "
                f"| {u.end_rss / MIB:.0f} "
                f"| {u.processes} |"
            )
    return rows


#: The cache scenarios compared: (label, hit scenario, miss scenario).
_CACHE_PAIRS = tuple(
    (label, f"cache-hit{suffix}-c{CACHE_CONCURRENCY}", f"cache-miss{suffix}-c{CACHE_CONCURRENCY}")
    for label, suffix in (("whole", ""), ("streamed", "-stream"))
)


def _hits(summary: Summary, answer: str = "hit") -> str:
    """How many good answers said `x-switchyard-cache: <answer>`, of all of them."""
    return f"{summary.cache.get(answer, 0)}/{summary.ok}"


def _speedup(engine: float, hit: float) -> float:
    """How many times faster a hit was than the engine's answer (NaN when unknown)."""
    if math.isnan(engine) or math.isnan(hit) or hit <= 0:
        return math.nan
    return engine / hit


def _p50_p99(summary: Summary | None) -> str:
    if summary is None:
        return "-"
    return f"{_ms(summary.latency_p50_s)} / {_ms(summary.latency_p99_s)}"


def _cache_rows(results: Sequence[Result]) -> list[str]:
    """Hits against misses and against the engine's own answer (the floor's `hit`), per
    Switchyard path."""
    by_key = {(r.path, r.scenario.name): r.summary for r in results}
    rows = [
        "| path | store | request | hits/ok (misses/ok) | hit p50 / p99 ms | miss p50 / p99 ms "
        "| engine p50 / p99 ms | hit / miss req/s | engine ÷ hit, p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted({r.path for r in results if r.path.startswith("switchyard-")}):
        for label, hit_name, miss_name in _CACHE_PAIRS:
            hit = by_key.get((path, hit_name))
            if hit is None:
                continue
            miss, engine = by_key.get((path, miss_name)), by_key.get(("floor", hit_name))
            ratios = "-"
            if engine is not None:
                p50 = _speedup(engine.latency_p50_s, hit.latency_p50_s)
                p99 = _speedup(engine.latency_p99_s, hit.latency_p99_s)
                ratios = f"{p50:.1f}x / {p99:.1f}x"
            rates = f"{_rate(hit.requests_per_s)} / {_rate(miss.requests_per_s) if miss else '-'}"
            answers = _hits(hit) + (f" ({_hits(miss, 'miss')})" if miss else "")
            rows.append(
                f"| {path} | {cache_mode(workers(path))} | {label} | {answers} | {_p50_p99(hit)} "
                f"| {_p50_p99(miss)} | {_p50_p99(engine)} | {rates} | {ratios} |"
            )
    return rows


def _cache_targets(path: str, by_key: dict[tuple[str, str], Result]) -> list[dict[str, Any]]:
    """A hit at least `HIT_SPEEDUP` times faster than the engine's own answer to the same
    request (the floor's), at p50 and p99; it only counts if every answer was a hit."""
    checks: list[dict[str, Any]] = []
    for _, name, _ in _CACHE_PAIRS:
        ours, base = by_key.get((path, name)), by_key.get(("floor", name))
        if ours is None or base is None:
            continue
        all_hits = ours.summary.ok > 0 and ours.summary.cache.get("hit", 0) == ours.summary.ok
        for q, hit, engine in (
            ("p50", ours.summary.latency_p50_s, base.summary.latency_p50_s),
            ("p99", ours.summary.latency_p99_s, base.summary.latency_p99_s),
        ):
            ratio = _speedup(engine, hit)
            checks.append(
                {
                    "path": path,
                    "target": f"a hit ≥ {HIT_SPEEDUP:g}x faster than the engine's answer, "
                    f"{q}, {name}",
                    "ours_ms": round(hit * 1e3, 2),
                    "engine_ms": round(engine * 1e3, 2),
                    "speedup": round(ratio, 1),
                    "hits": _hits(ours.summary),
                    "holds": bool(all_hits and ratio >= HIT_SPEEDUP),
                }
            )
    return checks


def targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The issue's targets, checked for each Switchyard path against LiteLLM (and, for the
    response cache, against the engine's own answer)."""
    checks: list[dict[str, Any]] = []
    by_key = {(r.path, r.scenario.name): r for r in results}
    paths = sorted({r.path for r in results if r.path.startswith("switchyard-")})
    for path in paths:
        for group in ("unary", "stream"):
            for c in CONCURRENCY:
                name = f"{group}-c{c}"
                ours, peer, base = (by_key.get((p, name)) for p in (path, "litellm", "floor"))
                if ours is None or peer is None or base is None:
                    continue
                mine, theirs = added(ours.summary, base.summary), added(peer.summary, base.summary)
                for q, a, b in (
                    ("p50", mine.p50_s, theirs.p50_s),
                    ("p99", mine.p99_s, theirs.p99_s),
                ):
                    checks.append(
                        {
                            "path": path,
                            "target": f"added latency {q} ≤ ½ LiteLLM's, {name}",
                            "ours_ms": round(a * 1e3, 2),
                            "litellm_ms": round(b * 1e3, 2),
                            "holds": bool(a <= b / 2),
                        }
                    )
        for name in ("unary-c64", "stream-c64"):
            ours, peer, base = (by_key.get((p, name)) for p in (path, "litellm", "floor"))
            if ours is None or peer is None:
                continue
            a, b = ours.summary.requests_per_s, peer.summary.requests_per_s
            # Paced streams cap every path at the engine's own rate: matching the floor is
            # the most any gateway can do, whatever the peer manages.
            engine_bound = base is not None and a >= 0.95 * base.summary.requests_per_s
            checks.append(
                {
                    "path": path,
                    "target": f"requests/s ≥ 3x LiteLLM's, {name}",
                    "ours": round(a, 1),
                    "litellm": round(b, 1),
                    "holds": bool(a >= 3 * b or engine_bound),
                    "engine_bound": bool(engine_bound and a < 3 * b),
                }
            )
        checks += _cache_targets(path, by_key)
    return checks


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def noisy_checks(result: NoisyResult) -> list[dict[str, Any]]:
    """The issue's bars for the noisy neighbour, with fair queuing on and off: B's p99 TTFT
    within `BAR` times B's alone, and the model kept busy (`BUSY` of its slot time)."""
    checks: list[dict[str, Any]] = []
    for fair in (True, False):
        run = result.run(fair)
        if run is None:
            continue
        ratio = result.ratio(fair)
        checks.append(
            {
                "fair_queuing": fair,
                "target": f"B's p99 TTFT with A's flood ≤ {BAR:g}x B's alone",
                "ratio": round(ratio, 2),
                "holds": bool(ratio <= BAR),
            }
        )
        checks.append(
            {
                "fair_queuing": fair,
                "target": f"the model stays busy (≥ {BUSY:.0%} of its slot time)",
                "busy": round(run.busy, 3),
                "a_share": round(run.a_share, 3),
                "holds": bool(run.busy >= BUSY),
            }
        )
    return checks


def _noisy_lines(result: NoisyResult) -> list[str]:
    s = result.scenario
    rate = f"{s.rate_per_s:.1f}" if s.rate_per_s is not None else "-"
    lines = [
        f"## Noisy neighbour: tenant A floods one model at {NOISY_FLOOD}x its capacity, "
        f"tenant B sends at {NOISY_SHARE:.0%} of it",
        "",
        f"Capacity: {result.capacity} requests at once (the edge's "
        f"EDGE_MAX_IN_FLIGHT_PER_MODEL; one edge process), simulator TTFT "
        f"{result.ttft_s * 1e3:.0f} ms / ITL {result.itl_s * 1e3:.0f} ms. A: "
        f"{result.a_workers} closed-loop workers, non-streamed, {result.a_tokens // 2} to "
        f"{result.a_tokens * 3 // 2} tokens (mean {result.a_tokens}). "
        f"B: streamed, {result.b_tokens} tokens, open loop at {rate} req/s, "
        f"{s.requests} requests a run. Busy: the slot time of the requests that ended while "
        "B ran (each at the simulator's own duration for its length) over the capacity's; A's "
        "share is its "
        "part of it. Ratio: B's TTFT p99 ÷ B's alone.",
        "",
        "| run | B ok/sent | B TTFT p50 ms | B TTFT p99 ms | ratio | A done | A tokens/s "
        "| B tokens/s | A's share | model busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result.runs:
        ratio = "-" if run.fair is None else f"{result.ratio(run.fair):.2f}x"
        lines.append(
            f"| {run.label} | {run.b_ok}/{run.b_sent} | {_ms(run.b_ttft_p50_s)} "
            f"| {_ms(run.b_ttft_p99_s)} | {ratio} | {run.a_ok} | {_rate(run.a_tokens_per_s)} "
            f"| {_rate(run.b_tokens_per_s)} | {_pct(run.a_share)} | {_pct(run.busy)} |"
        )
    lines.append("")
    for check in noisy_checks(result):
        on = "on" if check["fair_queuing"] else "off"
        figure = f"{check['ratio']}x" if "ratio" in check else f"{check['busy']:.0%}"
        verdict = "yes" if check["holds"] else "NO"
        lines.append(f"- fair queuing {on}: {check['target']}: {figure}: {verdict}")
    lines.append("")
    return lines


def _noisy_json(result: NoisyResult) -> dict[str, Any]:
    return {
        "scenario": asdict(result.scenario),
        "capacity": result.capacity,
        "a_workers": result.a_workers,
        "a_tokens": result.a_tokens,
        "b_tokens": result.b_tokens,
        "ttft_s": result.ttft_s,
        "itl_s": result.itl_s,
        "runs": [asdict(r) | {"busy": r.busy} for r in result.runs],
        "ratio_fair": result.ratio(True),
        "ratio_fifo": result.ratio(False),
        "checks": noisy_checks(result),
    }


def markdown(run: Run, info: dict[str, Any], command: str) -> str:
    lines = [
        "# Switchyard bench",
        "",
        f"`{command}` — {run.duration_s / 60:.1f} min, "
        f"{info['cpu']}, {info['logical_cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, commit {info['commit']}; load average before the run "
        f"{run.load_before[0]:.1f} / {run.load_before[1]:.1f} / {run.load_before[2]:.1f}.",
        "",
        "Paths: **floor** = the vLLM simulator's own OpenAI API; **switchyard-Nw** = edge "
        "(N uvicorn workers) → adapter-vllm → the same simulator; **litellm** = LiteLLM "
        f"{run.litellm_version or '(not installed)'} proxy (1 worker) → the same simulator; "
        "**bare** = the bare relay: a do-nothing edge and adapter over Switchyard's "
        "transports (uvicorn, grpc.aio, aiohttp; no keys, routing, validation, protobuf, "
        "logs, metrics or traces) → the same simulator, the least an edge and adapter built "
        "this way can spend (unary and stream scenarios only). "
        "Added latency = the path's percentile minus the floor's, same scenario, same run. "
        "CPU µs / req, CPU µs / token and peak RSS count the path's own processes (edge + "
        "adapter, proxy, or the simulator for the floor; not the simulator behind a path), "
        "per successful request and per token of the successful answers (streams: the "
        "completion tokens of their usage chunks). Gap = the time between successive text "
        "chunks of a stream as the client read them. Client CPU % is the load generator's "
        "own use of one core; others CPU % is what every other process on the machine used "
        "meanwhile (the idle servers of the bench, and anything else): the run's noise; "
        "↻ = run again because the first run's noise was above "
        f"{run.max_noise_pct:g}%, the quieter run kept. "
        "Servers log at WARNING (the edge's per-request INFO line is off). "
        "⏱ = the scenario's time cap stopped it early.",
        "",
    ]
    for status in run.paths:
        if status.notes or not status.measured:
            note = "; ".join(status.notes) or "not measured"
            lines.append(f"- **{status.name}**: {note}")
    lines.append("")
    for group in GROUPS:
        rows = [r for r in run.results if r.scenario.group == group]
        if not rows:
            continue
        lines += [f"## {_group_title(group)}", "", _HEADER]
        lines += [_row(run.results, r) for r in rows]
        lines.append("")
        if group == "memory":
            lines += _memory_rows(rows)
            lines.append("")
        if group == "cache" and any(r.path.startswith("switchyard-") for r in rows):
            lines += _cache_rows(rows)
            lines.append("")
    for result in run.noisy:
        lines += _noisy_lines(result)
    for multiturn in run.multiturn:
        lines += multiturn_lines(multiturn)
    checks = targets(run.results)
    if checks:
        lines += [
            "## The issue's targets",
            "",
            "| path | target | Switchyard | compared with | holds |",
            "|---|---|---|---|---|",
        ]
        lines += [_target_row(c) for c in checks]
        lines.append("")
    lines += vs_floor_lines(run.results)
    lines += vs_bare_lines(run.results)
    lines += _noise_lines(run)
    return "\n".join(lines)


def reruns(run: Run) -> list[dict[str, Any]]:
    """The scenarios run twice for noise, with both runs' noise (% of one core)."""
    return [
        {
            "path": r.path,
            "scenario": r.scenario.name,
            "noise_pcts": [round(n, 1) for n in r.noise_pcts],
            "kept": 1 + r.noise_pcts.index(min(r.noise_pcts)),
        }
        for r in run.results
        if r.rerun
    ]


def _noise_lines(run: Run) -> list[str]:
    if not run.results:
        return []
    limit = run.max_noise_pct
    lines = [
        "## Noise",
        "",
        f"A scenario during which other processes used more than {limit:g}% of one core "
        "was run once more on that path, and the quieter run kept.",
        "",
    ]
    again = reruns(run)
    lines += [
        f"- {r['path']} {r['scenario']}: "
        + " then ".join(f"{n:.0f}%" for n in r["noise_pcts"])
        + f"; kept run {r['kept']}"
        for r in again
    ]
    if not again:
        lines.append("- none was above it: nothing was run again")
    noisy = [r for r in run.results if noise_pct(r) > limit]
    if noisy:
        names = ", ".join(f"{r.path} {r.scenario.name} ({noise_pct(r):.0f}%)" for r in noisy)
        lines.append(f"- still above it in the kept run: {names}")
    lines.append("")
    return lines


def _target_row(check: dict[str, Any]) -> str:
    ours = f"{check['ours_ms']} ms" if "ours_ms" in check else f"{check['ours']} req/s"
    if "engine_ms" in check:
        theirs = f"engine {check['engine_ms']} ms ({check['speedup']}x; hits {check['hits']})"
    elif "litellm_ms" in check:
        theirs = f"LiteLLM {check['litellm_ms']} ms"
    else:
        theirs = f"LiteLLM {check['litellm']} req/s"
    verdict = "yes" if check["holds"] else "NO"
    if check.get("engine_bound"):
        verdict = "yes (at the engine's own rate)"
    return f"| {check['path']} | {check['target']} | {ours} | {theirs} | {verdict} |"


def _result_json(results: Sequence[Result], r: Result) -> dict[str, Any]:
    base = _floor_of(results, r)
    delta = added(r.summary, base.summary) if base is not None and r.path != "floor" else None
    return {
        "path": r.path,
        "scenario": asdict(r.scenario),
        "summary": asdict(r.summary),
        "added_p50_s": delta.p50_s if delta else None,
        "added_p99_s": delta.p99_s if delta else None,
        "cpu_us_per_request": cpu_us_per_request(r),
        "cpu_us_per_token": cpu_us_per_token(r),
        "engine_cpu_us_per_token": engine_cpu_us_per_token(r),
        "usage": {role: asdict(u) for role, u in r.usage.items()},
        "engine_usage": asdict(r.engine),
        "client_cpu_s": r.client_cpu_s,
        "others_cpu_s": r.others_cpu_s,
        "noise_pct": noise_pct(r),
        "noise_pcts": list(r.noise_pcts),
        "capped": r.capped,
    }


def document(run: Run, info: dict[str, Any], command: str) -> dict[str, Any]:
    return {
        "command": command,
        "machine": info,
        "started": run.started,
        "duration_s": run.duration_s,
        "load_before": run.load_before,
        "litellm_version": run.litellm_version,
        "simulators": {k: asdict(v) for k, v in SIMS.items()},
        "paths": [asdict(p) for p in run.paths],
        "results": [_result_json(run.results, r) for r in run.results],
        "targets": targets(run.results),
        "vs_floor": vs_floor(run.results),
        "vs_bare": vs_bare(run.results),
        "max_noise_pct": run.max_noise_pct,
        "reruns": reruns(run),
        "noisy": [_noisy_json(r) for r in run.noisy],
        "multiturn": [multiturn_json(r) for r in run.multiturn],
    }


def write(directory: Path, stem: str, text: str, doc: dict[str, Any]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(text + "\n")
    js.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return md, js
