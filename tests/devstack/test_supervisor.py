"""The devstack's supervisor: Ctrl-C returns even when a child left a process behind."""

from __future__ import annotations

import asyncio
import re

import pytest

from switchyard.devstack.supervisor import Supervisor


async def test_a_process_left_behind_holding_a_child_s_output_does_not_hold_the_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    supervisor = Supervisor(quiet=True)
    # The child exits on SIGTERM (or is killed after the grace); the process it started
    # keeps its output pipe open.
    child = await supervisor.start(
        "leaver",
        ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & echo 'up 1'; wait"],
        listening=re.compile(r"up (\d+)"),
    )
    assert child.process is not None
    await supervisor.port_of(child)  # it said so: its trap and its leftover are in place
    try:
        async with asyncio.timeout(30):  # generous: RELAY_END_S is 5 s
            await supervisor.stop_all(grace_s=1)
        assert child.process.returncode is not None
        assert child.relay is not None
        assert child.relay.done()
        assert "its output is still open after it exited" in capsys.readouterr().err
    finally:
        # The sleep it left behind: found by its parent's pid being gone, so by name here.
        leftover = await asyncio.create_subprocess_exec("pkill", "-f", "^sleep 600$")
        await leftover.wait()
