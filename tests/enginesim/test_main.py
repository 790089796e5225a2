"""`python -m switchyard.enginesim ENGINE ...` (the image's `switchyard-enginesim`): the
engine's own simulator with the arguments that follow."""

from __future__ import annotations

import subprocess
import sys

from switchyard.enginesim.__main__ import engines


def enginesim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.enginesim", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_engines_are_the_runnable_subpackages() -> None:
    assert engines() == ["sglang", "tgi", "vllm"]


def test_an_engine_gets_its_own_arguments() -> None:
    result = enginesim("tgi", "--help")
    assert result.returncode == 0, result.stderr
    assert "--max-total-tokens" in result.stdout  # TGI's launcher flags, not vLLM's


def test_no_or_an_unknown_engine_is_refused_with_the_choices() -> None:
    for args in ((), ("structured",), ("llama.cpp",)):
        result = enginesim(*args)
        assert result.returncode != 0
        assert "{sglang,tgi,vllm}" in result.stderr
