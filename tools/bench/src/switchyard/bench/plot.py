"""The PNG: latency (p50 and p99) against concurrency, one line per path, log scales."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from switchyard.bench.runner import Result
from switchyard.bench.scenarios import CONCURRENCY

_PANELS = (
    ("unary", "Non-streaming (16 tokens, simulator without latency)"),
    ("stream", "Streaming (256 tokens, realistic TTFT and ITL)"),
)


def plot(results: Sequence[Result], path: Path) -> Path:
    figure, axes = plt.subplots(1, len(_PANELS), figsize=(13, 5), constrained_layout=True)
    for ax, (group, title) in zip(axes, _PANELS, strict=True):
        rows = [r for r in results if r.scenario.group == group]
        for name in dict.fromkeys(r.path for r in rows):
            mine = sorted((r for r in rows if r.path == name), key=lambda r: r.scenario.concurrency)
            xs = [r.scenario.concurrency for r in mine]
            p50 = [r.summary.latency_p50_s * 1e3 for r in mine]
            p99 = [r.summary.latency_p99_s * 1e3 for r in mine]
            if all(math.isnan(v) for v in p50):
                continue
            (line,) = ax.plot(xs, p50, marker="o", label=f"{name} p50")
            ax.plot(
                xs, p99, marker="^", linestyle="--", color=line.get_color(), label=f"{name} p99"
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrency")
        ax.set_ylabel("latency, ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
