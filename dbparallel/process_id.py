"""What tells a process of this machine from every other: where its pid means something
(``process_space``) and when it started (``process_start``), read from /proc. Used by the
write leases and run records (training/holder.py) and by the corpus builds' folders
(data/build_dirs.py)."""

from __future__ import annotations

import os


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


def process_start(pid: int | str = "self") -> str:
    """When process ``pid`` of this machine started, in clock ticks since boot (field 22 of
    /proc/PID/stat): with its pid, what tells a process from one that took the pid over after
    it ended. "" where /proc does not say."""
    stat = proc_stat(pid)
    return stat[19] if stat else ""


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (which may hold ")"), field 3
    (the state: ``Z`` a zombie) first; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None
