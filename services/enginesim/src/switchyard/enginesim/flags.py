"""What every simulator's command line shares: the `--sim-*` flags and argument types.

Each engine's own `flags` module takes that engine's flags, with its names and defaults,
and adds these (no engine has them).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from switchyard.enginesim.scheduler import LatencyModel

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
C = TypeVar("C", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class SimOptions:
    latency: LatencyModel
    seed: int | None  # seeds requests that bring no seed; None: fresh randomness
    multimodal: bool = False  # the model reads images (where the engine has no flag for it)
    embedding_dimensions: int = 384  # an embedding model's hidden size: its vectors' length


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `--sim-*` flags to an engine's own argument parser."""
    group = parser.add_argument_group("simulator", "Simulator-only flags (no engine has them).")
    for flag, default, what in (
        ("--sim-load-delay", 0.0, "seconds of simulated model loading at start-up"),
        ("--sim-ttft", 0.02, "time to first token, in seconds"),
        ("--sim-itl", 0.01, "inter-token latency, in seconds"),
        (
            "--sim-prefill-per-token",
            0.0,
            "extra time to first token per prompt token not in the prefix cache, in seconds",
        ),
    ):
        group.add_argument(
            flag, type=seconds, default=default, metavar="S", help=f"{what} (default: {default:g})"
        )
    group.add_argument(
        "--sim-seed",
        type=int,
        default=None,
        metavar="N",
        help="sample requests that carry no seed as if they had this one (default: random)",
    )
    group.add_argument(
        "--sim-multimodal", action="store_true",
        help="simulate a model that reads images (default: text only, which refuses images)",
    )  # fmt: skip
    group.add_argument(
        "--sim-embedding-dimensions", type=at_least(1), default=384, metavar="N",
        help="an embedding model's hidden size, the length of its vectors (default: 384)",
    )  # fmt: skip


def sim_options(args: argparse.Namespace) -> SimOptions:
    """The options parsed by a parser set up with `add_sim_arguments`."""
    latency = LatencyModel(
        load_delay_s=args.sim_load_delay,
        ttft_s=args.sim_ttft,
        prefill_s_per_token=args.sim_prefill_per_token,
        itl_s=args.sim_itl,
    )
    return SimOptions(
        latency=latency,
        seed=args.sim_seed,
        multimodal=args.sim_multimodal,
        embedding_dimensions=args.sim_embedding_dimensions,
    )


def checked(convert: Callable[[str], T], ok: Callable[[T], bool], what: str) -> Callable[[str], T]:
    """An argument type: `convert(text)`, refused unless `ok` (`what` says what it must be)."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def at_least(low: int) -> Callable[[str], int]:
    """An argument type: an integer of at least `low`."""
    return checked(int, lambda value: value >= low, f"at least {low}")


#: Argument types: a finite number of seconds, at least 0 or more than 0.
seconds = checked(float, lambda value: math.isfinite(value) and value >= 0, "a finite number >= 0")
positive_seconds = checked(float, lambda value: math.isfinite(value) and value > 0, "a number > 0")


def from_args(config: type[C], args: argparse.Namespace, **values: Any) -> C:
    """A `config` dataclass: each field from `values`, else the argument of its name (its
    `sim` field: the `--sim-*` options)."""
    values.setdefault("sim", sim_options(args))
    names = [f.name for f in fields(config) if f.name in values or hasattr(args, f.name)]
    return config(
        **{name: values[name] if name in values else getattr(args, name) for name in names}
    )


def new_parser(engine: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of `python -m switchyard.enginesim.<engine>`."""
    prog = f"python -m switchyard.enginesim.{engine}"
    return argparse.ArgumentParser(prog=prog, description=description, **kwargs)
