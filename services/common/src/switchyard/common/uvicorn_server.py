"""uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM/SIGINT.

uvicorn (0.29+) re-raises the signal it captured once it has shut down, so a process that
finished every request still dies "by the signal" (status 143), which supervisors and
Kubernetes report as a failure. The work is done by then; exiting normally says so.
"""

from __future__ import annotations

from types import FrameType

import uvicorn


class GracefulServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # nothing to re-raise after the graceful shutdown
