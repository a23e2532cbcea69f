"""Which process holds a block's write lease (training/lease.py), and whether it still runs.

A lease's ``holder`` is ``session/host/pid/nonce/space/start``: the run's session (for a run
whose blocks train in Ray actors or workers, ``uuid@host:pid~space~start`` naming its driver),
the process, where its pid means something (``process_space``) and when it started
(``process_start``; leases written before it was recorded lack it). A process of this machine
and pid namespace can be asked whether it runs; one of another machine or container cannot.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid

from dbparallel.process_id import proc_stat, process_space, process_start


def driver_session() -> str:
    """A new session of a run whose blocks train in other processes (Ray actors or workers):
    uuid@host:pid~space~start, naming its driver, the process that a refusal tells the user
    to stop: where that pid means something (a digest of its ``process_space``), so that it
    can be asked about on its own machine wherever the run's blocks train, and when it
    started (``process_start``), which tells it from a process that took its pid over."""
    return (f"{uuid.uuid4().hex}@{socket.gethostname()}:{os.getpid()}~{_space_digest()}"
            f"~{process_start()}")


def new_holder(session: str) -> str:
    """A lease holder naming this process for ``session``: session/host/pid/nonce/space/start
    (the nonce tells two writers of one process apart)."""
    return (f"{session}/{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}/"
            f"{process_space()}/{process_start()}")


def of_this_process(holder: str) -> bool:
    """Whether lease ``holder`` names this very process (its host, pid, ``process_space``
    and ``process_start``), whatever its session and nonce."""
    mine = new_holder("-").split("/")
    parts = str(holder).split("/")
    return len(parts) == len(mine) and all(parts[i] == mine[i] for i in (1, 2, 4, 5))


def session_start(session: str) -> str:
    """The ``process_start`` of the driver a ``driver_session`` names; "" where not known."""
    fields = session.partition("@")[2].split("~")
    return fields[2] if len(fields) > 2 else ""


def _space_digest() -> str:
    """A short digest of this process's ``process_space``, which holds ``/`` and ``:`` that a
    session cannot; "" where the system does not say."""
    space = process_space()
    return hashlib.sha256(space.encode()).hexdigest()[:16] if space else ""


def session_driver(session: str) -> tuple[str, str] | None:
    """(host, pid) of the driver a ``driver_session`` names; None for other sessions."""
    _, at, driver = session.partition("@")
    host, colon, pid = driver.partition("~")[0].rpartition(":")
    return (host, pid) if at and colon and pid.isdigit() else None


def holder_driver(holder: str) -> tuple[str, str] | None:
    """(host, pid) of the driver that started lease ``holder``'s process, when that process
    is not the driver itself (a Ray actor or worker); None otherwise."""
    session, host, pid = holder_parts(holder)
    driver = session_driver(session)
    return driver if driver is not None and driver != (host, pid) else None


def driver_holding(holder: str) -> tuple[str, str] | None:
    """(host, pid) of the driver that holds the block of lease ``holder`` although the
    holder's process (a Ray actor or worker) is gone: its run goes on, however long, as long
    as that driver runs on this machine (Ray stops a block's actor once it has trained, and
    its lease is renewed no more, while the driver assembles the blocks, trains the others or
    starts the block's process again), and the driver releases the lease at the run's end.
    None otherwise. A rerun is refused while it holds the block (``refuse_if_held``), and
    ``dbparallel status`` shows the block ``held by its driver``."""
    driver = holder_driver(holder)
    if driver is None or holder_alive(holder) is not False or not driver_alive(holder, driver):
        return None
    return driver


def driver_alive(holder: str, driver: tuple[str, str]) -> bool | None:
    """Whether ``driver``, the driver of lease ``holder``'s process, runs: None where it
    cannot be asked from here (another machine's or container's: its session names its
    process space, or for a session that does not, it is not on the holder's machine, whose
    space the holder names); False where it is gone, or is this process (whose earlier run
    ended without releasing its leases: it runs no other run now)."""
    parts = holder.split("/")
    if len(parts) < 5:
        return None
    if driver == (socket.gethostname(), str(os.getpid())):
        return False
    space = parts[0].partition("@")[2].split("~")[1:2]
    if space and space[0]:  # the driver's own space: asked wherever the holder runs
        here = _space_digest()
        return holder_alive("/".join([parts[0], driver[0], driver[1], parts[3],
                                      process_space() if space[0] == here else "elsewhere"]))
    if driver[0] != parts[1]:
        return None
    return holder_alive("/".join([parts[0], driver[0], driver[1], *parts[3:]]))


def process_to_stop(holder: str) -> tuple[str, str, bool | None]:
    """(host, pid, runs) of the process that stops lease ``holder``'s writer: for a Ray
    block process the run's driver (Ray would start the block's process again; the driver
    stops them all and releases their leases), else the holder itself. ``runs`` as
    ``driver_alive`` or ``holder_alive`` says of it."""
    driver = holder_driver(holder)
    if driver is not None:
        return driver[0], driver[1], driver_alive(holder, driver)
    _, host, pid = holder_parts(holder)
    return host, pid, holder_alive(holder)


def still_runs(pid: str, start: str, when: float) -> bool | None:
    """Whether the process of this machine that had pid ``pid`` and started at ``start``
    (``process_start``) still runs: not where the pid is gone, a zombie (ended, not yet
    waited for by its parent) or another process's (one that took it over). Where ``start``
    is not known (a lease or session written before it was recorded): whether the pid's
    process had started by Unix time ``when`` (its lease's last renewal), which a process that
    took it over since had not. None where /proc does not say (not Linux, or hidden)."""
    if not str(pid).isdigit():  # a damaged lease's: no process of this system
        return None
    stat = proc_stat(pid)
    if stat is None:  # /proc is there: the process is not
        return False if os.path.isdir("/proc/self") else None
    if stat[0] in ("Z", "X"):
        return False
    if start:
        return stat[19] == start
    try:
        with open("/proc/uptime") as f:
            uptime, now = float(f.read().split()[0]), time.time()
    except (OSError, ValueError):
        return None
    age = uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK")
    return now - age <= when


def this_process() -> dict[str, str]:
    """This process as a record another process can ask about (``process_ended``)."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "space": process_space()}


def process_ended(process: object) -> bool:
    """Whether the process a ``this_process`` record names runs no run any more: it is this
    process (between two runs), or one of this machine and pid namespace that is gone.
    False where that is not known (no record, or another machine's process)."""
    if not isinstance(process, dict) or not all(isinstance(process.get(k), str)
                                                for k in ("host", "pid", "space")):
        return False
    if process == this_process():
        return True
    return holder_alive(f"-/{process['host']}/{process['pid']}/-/{process['space']}") is False


def process_shown(process: object) -> str:
    """``pid P on HOST`` of a ``this_process`` record, for messages."""
    if isinstance(process, dict) and process.get("pid"):
        return f"pid {process['pid']} on {process.get('host', '?')}"
    return "its process is not recorded"


def holder_parts(holder: str) -> tuple[str, str, str]:
    """(session, host, pid) of a lease holder (session/host/pid/nonce/space/start); "?" for parts
    a damaged holder lacks."""
    return tuple((str(holder).split("/") + ["?", "?", "?"])[:3])  # type: ignore[return-value]


def holder_start(holder: str) -> str:
    """The ``process_start`` of lease ``holder``'s process (its sixth part); "" where the
    holder does not record it."""
    parts = str(holder).split("/")
    return parts[5] if len(parts) > 5 else ""


def holder_alive(holder: str) -> bool | None:
    """Whether the process that wrote lease ``holder`` (session/host/pid/nonce/space/...) still
    runs, when its pid can be asked from here (the same host and ``process_space``); None
    otherwise: another machine's or container's, or a lease written before holders named
    their space. A pid taken over by a new process reads as alive: the safe side
    (``still_runs`` tells the two apart)."""
    parts = holder.split("/")
    if len(parts) < 5 or parts[1] != socket.gethostname() or not parts[2].isdigit() \
            or not parts[4] or parts[4] != process_space():
        return None
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    except (OverflowError, ValueError):  # no pid of this system (a damaged lease): unknown
        return None
    return True
