"""The processes of a private Ray node whose start was cut short (SIGTERM or SIGINT to the
driver inside ``ray.init``, as ``dbparallel stop`` or ``kill`` sends): Ray has not recorded the
node yet, so ``ray.shutdown`` cannot stop them. Its GCS server and raylet end with the driver,
but the raylet's agents (the dashboard and runtime-env agents, some 200 MB) were seen to
outlive it by a minute or more. They are the descendants of this process that were not there
when the connection began: ``new_descendants`` finds them (before ``ray.shutdown``, while the
agents are still the raylet's children) and ``stop_processes`` ends those that still run after
it, read from /proc (elsewhere nothing is done). No clock is compared: each process is told
by its pid and its start time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from dbparallel.process_id import proc_stat

GRACE_S = 3.0  # seconds a process has to end on SIGTERM before it is killed


def descendants(root: int | None = None) -> dict[int, str]:
    """The descendants of ``root`` (this process): pid -> its start time (with the pid, what
    tells it from a process that took the pid over); none where /proc cannot be read."""
    parent_of: dict[int, tuple[int, str]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            stat = proc_stat(entry) if entry.isdigit() else None
            if stat and len(stat) > 19:
                parent_of[int(entry)] = (int(stat[1]), stat[19])
    found: dict[int, str] = {}
    frontier = {root or os.getpid()}
    while frontier:
        children = {pid for pid, (ppid, _) in parent_of.items()
                    if ppid in frontier and pid not in found}
        found.update({pid: parent_of[pid][1] for pid in children})
        frontier = children
    return found


def new_descendants(before: dict[int, str]) -> dict[int, str]:
    """This process's descendants that are not in ``before`` (``descendants()`` when the
    connection began), pid -> start time."""
    return {pid: start for pid, start in descendants().items() if before.get(pid) != start}


def stop_processes(started: dict[int, str], grace: float = GRACE_S) -> list[int]:
    """SIGTERM the processes of ``started`` (pid -> start time; found while the raylet's
    agents were still its children, before any of them ended) that still run, then SIGKILL
    those still running after ``grace`` seconds; the pids signalled."""
    started = {pid: start for pid, start in started.items() if _same(pid, start)}
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
