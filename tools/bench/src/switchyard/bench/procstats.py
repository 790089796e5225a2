"""CPU time and memory of the server processes, by role, over one scenario.

A role (edge, adapter, proxy, sim) is one or more processes and all their descendants
(uvicorn's worker processes, for instance). CPU is user + system time, read at the start
and the end of the scenario; memory is the role's total resident set size, sampled by a
thread every `interval_s` (a thread, so the load generator's event loop never waits on
/proc), and read once more at the end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RoleUsage:
    cpu_s: float
    start_rss: int  # bytes, when the scenario started
    peak_rss: int  # bytes
    end_rss: int  # bytes, when the scenario ended
    processes: int


def _tree(pids: Sequence[int]) -> list[psutil.Process]:
    processes: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            processes.append(root)
            processes.extend(root.children(recursive=True))
    return processes


def _cpu(processes: Sequence[psutil.Process]) -> dict[int, float]:
    times: dict[int, float] = {}
    for p in processes:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            times[p.pid] = t.user + t.system
    return times


def _rss(processes: Sequence[psutil.Process]) -> int:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def own_cpu_s() -> float:
    """This process's CPU time so far (the load generator's)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def machine_busy_s() -> float:
    """CPU time the whole machine spent busy so far (all cores, all processes; a
    hypervisor's steal included: it is noise too)."""
    t = psutil.cpu_times()
    # Linux counts guest time inside user and nice already: once is enough.
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - guest


@dataclass
class Meter:
    """Meters `roles` between `start()` and `stop()` (both read /proc: call them off the
    event loop, e.g. with `asyncio.to_thread`)."""

    roles: Sequence[Role]
    interval_s: float = 0.05
    _start_cpu: dict[str, dict[int, float]] = field(default_factory=dict)
    _peaks: dict[str, int] = field(default_factory=dict)
    _start_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._start_cpu = {r.name: _cpu(_tree(r.pids)) for r in self.roles}
        self._start_rss = {r.name: _rss(_tree(r.pids)) for r in self.roles}
        self._peaks = dict(self._start_rss)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for role in self.roles:
            rss = _rss(_tree(role.pids))
            self._peaks[role.name] = max(self._peaks[role.name], rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> dict[str, RoleUsage]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        usage: dict[str, RoleUsage] = {}
        for role in self.roles:
            processes = _tree(role.pids)
            end = _cpu(processes)
            before = self._start_cpu.get(role.name, {})
            # A process that appeared meanwhile counts from zero.
            cpu = sum(t - before.get(pid, 0.0) for pid, t in end.items())
            rss = _rss(processes)
            usage[role.name] = RoleUsage(
                cpu_s=cpu,
                start_rss=self._start_rss[role.name],
                peak_rss=max(self._peaks[role.name], rss),
                end_rss=rss,
                processes=len(processes),
            )
        return usage
