"""uvicorn's server, exiting 0 after a graceful shutdown on SIGTERM/SIGINT.

uvicorn (0.29+) catches SIGTERM/SIGINT while it serves; once it has shut down it puts
back the handlers it found and raises the signal again into them, so a process that
finished every request would still die "by the signal" (status 143), which supervisors
and Kubernetes report as a failure. The work is done by then: here the handlers uvicorn
finds (and puts back) are ours, and they take that last signal as already handled.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import uvicorn
from uvicorn.server import HANDLED_SIGNALS


class GracefulServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        early: list[int] = []

        def remember(sig: int, frame: FrameType | None) -> None:
            early.append(sig)

        try:
            previous = {sig: signal.signal(sig, remember) for sig in HANDLED_SIGNALS}
        except ValueError:  # not the main thread: uvicorn does not capture signals either
            yield
            return
        try:
            with super().capture_signals():
                for sig in early:  # arrived just before uvicorn listened: not lost
                    self.handle_exit(sig, None)
                early.clear()
                yield
            # uvicorn has re-raised what it caught into `remember`: handled, nothing to do.
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
