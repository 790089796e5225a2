"""The shared `--sim-*` flags."""

from __future__ import annotations

import argparse

import pytest

from switchyard.enginesim.flags import add_sim_arguments, sim_options
from switchyard.enginesim.scheduler import LatencyModel


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    options = sim_options(_parse())
    assert options.latency == LatencyModel(load_delay_s=0, ttft_s=0.02, itl_s=0.01)
    assert options.seed is None
    assert not options.multimodal


def test_multimodal() -> None:
    assert sim_options(_parse("--sim-multimodal")).multimodal


def test_values() -> None:
    args = _parse(
        "--sim-load-delay", "2.5", "--sim-ttft", "0", "--sim-itl", "0.001",
        "--sim-prefill-per-token", "0.0001", "--sim-seed", "42",
    )  # fmt: skip
    options = sim_options(args)
    assert options.latency == LatencyModel(2.5, 0, 0.0001, 0.001)
    assert options.seed == 42


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_bad_durations_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--sim-ttft", value)
    assert "--sim-ttft" in capsys.readouterr().err
