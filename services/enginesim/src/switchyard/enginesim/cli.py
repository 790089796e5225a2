"""The simulator-only command-line flags every front-end shares (`--sim-*`)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from switchyard.enginesim.scheduler import LatencyModel


@dataclass(frozen=True, slots=True)
class SimOptions:
    latency: LatencyModel
    seed: int | None  # seeds requests that bring no seed; None: fresh randomness


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `--sim-*` flags to an engine's own argument parser."""
    group = parser.add_argument_group("simulator", "Simulator-only flags (no engine has them).")
    group.add_argument(
        "--sim-load-delay", type=_seconds, default=0.0, metavar="S",
        help="seconds of simulated model loading at start-up (default: 0)",
    )  # fmt: skip
    group.add_argument(
        "--sim-ttft", type=_seconds, default=0.02, metavar="S",
        help="time to first token, in seconds (default: 0.02)",
    )  # fmt: skip
    group.add_argument(
        "--sim-itl", type=_seconds, default=0.01, metavar="S",
        help="inter-token latency, in seconds (default: 0.01)",
    )  # fmt: skip
    group.add_argument(
        "--sim-prefill-per-token", type=_seconds, default=0.0, metavar="S",
        help="extra time to first token per prompt token, in seconds (default: 0)",
    )  # fmt: skip
    group.add_argument(
        "--sim-seed", type=int, default=None, metavar="N",
        help="sample requests that carry no seed as if they had this one (default: random)",
    )  # fmt: skip


def sim_options(args: argparse.Namespace) -> SimOptions:
    """The options parsed by a parser set up with `add_sim_arguments`."""
    latency = LatencyModel(
        load_delay_s=args.sim_load_delay,
        ttft_s=args.sim_ttft,
        prefill_s_per_token=args.sim_prefill_per_token,
        itl_s=args.sim_itl,
    )
    return SimOptions(latency=latency, seed=args.sim_seed)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value
