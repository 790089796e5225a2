"""`python -m switchyard.bench` (what `make bench` runs): every path, every scenario, one run.

Writes bench/results/<time>.md, .json and .png (and <time>/ with each process's log),
and prints the markdown report. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import uvloop

from switchyard.bench import litellm
from switchyard.bench.plot import plot
from switchyard.bench.report import document, machine, markdown, write
from switchyard.bench.runner import MAX_NOISE_PCT, PATHS, Progress, bench
from switchyard.bench.scenarios import default_plan, select


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m switchyard.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--paths",
        type=_list,
        default=list(PATHS),
        help=f"comma-separated paths to measure (default: {','.join(PATHS)}); "
        "the floor is always measured",
    )
    parser.add_argument(
        "--scenarios",
        type=_list,
        default=None,
        help="comma-separated scenario names or groups (unary, stream, open, memory, tools, "
        "embed, cache, noisy, multiturn); default: all. noisy (the noisy neighbour) and "
        "multiturn (prefix-aware vs load routing over 4 replicas) run once each, on their "
        "own edges, whatever the paths",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every scenario's request count (default 1: fits in ten minutes)",
    )
    parser.add_argument(
        "--max-noise",
        type=float,
        default=MAX_NOISE_PCT,
        help="run a scenario once more on a path when other processes used more than this "
        f"%% of one core meanwhile, keeping the quieter run (default {MAX_NOISE_PCT:g})",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    parser.add_argument(
        "--litellm-version",
        default=litellm.VERSION,
        help=f"litellm[proxy] version for its virtualenv (default {litellm.VERSION})",
    )
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=Path("bench/.litellm-venv"),
        help="LiteLLM's own virtualenv, created if missing (default bench/.litellm-venv)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where results go (default bench/results)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown path(s): {', '.join(sorted(unknown))}; known: {', '.join(PATHS)}")
    paths = [p for p in PATHS if p in args.paths or p == "floor"]
    if args.no_litellm and "litellm" in paths:
        paths.remove("litellm")
    try:
        plan = [s.scaled(args.scale) for s in select(default_plan(), args.scenarios)]
    except ValueError as exc:
        parser.error(str(exc))
    if args.scale <= 0:
        parser.error("--scale must be positive")

    stem = time.strftime("%Y%m%d-%H%M%S")
    state_dir = args.out / stem
    state_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "switchyard.bench", *sys.argv[1:]])
    progress = Progress()
    on_paths = sum(s.group not in ("noisy", "multiturn") for s in plan)
    what = f"{', '.join(paths)}; {on_paths} scenarios each" if on_paths else "no paths"
    if on_paths < len(plan):
        what += "; then the noisy neighbour and/or the multi-turn scenario, on their own edges"
    progress.say(f"bench: {what}; logs in {state_dir}")
    run = uvloop.run(
        bench(
            paths,
            plan,
            state_dir,
            args.litellm_venv,
            args.litellm_version,
            progress,
            max_noise_pct=args.max_noise,
        )
    )
    info = machine()
    text = markdown(run, info, command)
    md, js = write(args.out, stem, text, document(run, info, command))
    png = plot(run.results, args.out / f"{stem}.png")
    print(text)
    progress.say(f"wrote {md}, {js} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
