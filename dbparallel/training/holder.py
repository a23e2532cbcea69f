"""Which process holds a block's write lease (training/lease.py), and whether it still runs.

A lease's ``holder`` is ``session/host/pid/nonce/space``: the run's session (for a run whose
blocks train in Ray actors or workers, ``uuid@host:pid`` naming its driver), the process, and
where its pid means something (``process_space``). A process of this machine and pid
namespace can be asked whether it runs; one of another machine or container cannot.
"""

from __future__ import annotations

import os
import socket
import time
import uuid


def process_space() -> str:
    """Where this process's pid means something: the kernel's boot and the pid namespace
    (containers on one host share a hostname with ``--network host``, not a pid namespace);
    "" where the system does not say (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def driver_session() -> str:
    """A new session of a run whose blocks train in other processes (Ray actors or workers):
    uuid@host:pid, naming its driver, the process that a refusal tells the user to stop."""
    return f"{uuid.uuid4().hex}@{socket.gethostname()}:{os.getpid()}"


def session_driver(session: str) -> tuple[str, str] | None:
    """(host, pid) of the driver a ``driver_session`` names; None for other sessions."""
    _, at, driver = session.partition("@")
    host, colon, pid = driver.rpartition(":")
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
    cannot be asked from here (it is not on the holder's machine, whose process space is the
    only one known, or the holder cannot be asked: ``holder_alive``); False where it is gone,
    or is this process (whose earlier run ended without releasing its leases: it runs no
    other run now)."""
    parts = holder.split("/")
    if len(parts) < 5 or driver[0] != parts[1]:
        return None
    if driver == (socket.gethostname(), str(os.getpid())):
        return False
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


def started_by(pid: str, when: float) -> bool | None:
    """Whether process ``pid`` of this machine runs and had started by Unix time ``when``: a
    lease's holder, and its driver, had by the lease's last renewal, and a process that took
    the pid over since had not. A zombie (ended, not yet waited for by its parent) does not
    run. None where /proc does not say (not Linux, or hidden)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            uptime, now = float(f.read().split()[0]), time.time()
    except (FileNotFoundError, ProcessLookupError):  # /proc is there: the process is not
        return False if os.path.isdir("/proc/self") else None
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold ")"
    if fields[0] in ("Z", "X"):
        return False
    age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: ticks since boot
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
    """(session, host, pid) of a lease holder (session/host/pid/nonce/space); "?" for parts
    a damaged holder lacks."""
    return tuple((str(holder).split("/") + ["?", "?", "?"])[:3])  # type: ignore[return-value]


def holder_alive(holder: str) -> bool | None:
    """Whether the process that wrote lease ``holder`` (session/host/pid/nonce/space) still
    runs, when its pid can be asked from here (the same host and ``process_space``); None
    otherwise: another machine's or container's, or a lease written before holders named
    their space. A pid taken over by a new process reads as alive: the safe side
    (``started_by`` tells the two apart)."""
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
