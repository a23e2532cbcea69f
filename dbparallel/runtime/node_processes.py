"""The processes of a private Ray node whose start was cut short (Ctrl-C or SIGTERM inside
``ray.init``): Ray has not recorded the node yet, so ``ray.shutdown`` cannot stop them. Its GCS
server and raylet end with the driver, but the raylet's agents (the dashboard and runtime-env
agents, some 200 MB) were seen to outlive it by a minute or more. They are this process's
descendants that started after the connection began: ``stop_started_since`` ends them, read
from /proc (elsewhere nothing is done).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from dbparallel.process_id import proc_stat

GRACE_S = 3.0  # seconds a process has to end on SIGTERM before it is killed


def ticks_now() -> int:
    """Clock ticks since boot now, the unit of a process's start time in /proc; 0 where
    /proc does not say."""
    try:
        with open("/proc/uptime") as f:
            return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 0


def descendants_since(ticks: int, root: int | None = None) -> dict[int, str]:
    """The descendants of ``root`` (this process) that started at or after ``ticks``: pid ->
    its start time (with the pid, what tells it from a process that took the pid over)."""
    parent_of: dict[int, tuple[int, str]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            stat = proc_stat(entry) if entry.isdigit() else None
            if stat and len(stat) > 19:
                parent_of[int(entry)] = (int(stat[1]), stat[19])
    found, frontier = {}, {root or os.getpid()}
    while frontier:
        children = {pid for pid, (ppid, _) in parent_of.items()
                    if ppid in frontier and pid not in found}
        for pid in children:
            found[pid] = parent_of[pid][1]
        frontier = children
    return {pid: start for pid, start in found.items() if int(start) >= ticks}


def stop_started_since(ticks: int, grace: float = GRACE_S) -> list[int]:
    """SIGTERM this process's descendants that started at or after ``ticks`` (found before
    any of them ends, so that the raylet's agents are still its grandchildren), then SIGKILL
    those still running after ``grace`` seconds; the pids signalled."""
    if not ticks:
        return []
    started = descendants_since(ticks)
    for pid in started:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_same(p, s) for p, s in started.items()):
        time.sleep(0.05)
    for pid, start in started.items():
        if _same(pid, start):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return sorted(started)


def _same(pid: int, start: str) -> bool:
    """Whether ``pid`` still runs as the process that started at ``start`` (a zombie, ended
    but not yet reaped by its parent, does not)."""
    stat = proc_stat(pid)
    return bool(stat) and stat[19] == start and stat[0] not in ("Z", "X")
