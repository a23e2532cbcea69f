"""Stopping the processes that hold a run's blocks, from its run directory: ``dbparallel stop
RUN_DIR``.

Each block's write lease (lease.py) names its holder. The process to stop is that holder for a
``--local`` run (one process for all its blocks, or one per ``--block`` process), and for a Ray
run the run's driver, which the session names (Ray would start a block's process again; the
driver stops them all and releases their leases). SIGTERM, sent once to each such process,
stops it as Ctrl-C does (cli_stop.py): where it is, its leases released, and the same
``train`` command resumes it.

Only a process that holder.py can ask (this machine and pid namespace) is signalled, and only
the one that had its pid when the lease was written (``still_runs``: the lease and the session
record when each started), not a new process that took the pid over since. One of another
machine or container is named, with its host, to be stopped there.

A ``--local`` run assembling its blocks holds no lease: the process records itself in the run
directory while it does (assembling.py), named as a lease names its holder, and is found and
stopped the same way. A Ray run's driver records itself too, while its final assembly runs:
the same process as its blocks' leases lead to, signalled once. A ``--local`` process also
records itself in ``running/`` for its whole run (running.py), so that it is found while it
holds neither a lease nor the assembly's record: while it checks the data, before it writes
the run's config.yaml, and between two blocks. A Ray run's driver records itself there too,
under the run's session, so that it is found while no block's lease names it: while it checks
the data on the cluster, waits for placement, or starts its actors. A process that a lease or
the assembly's record names already is signalled for those, once.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from dbparallel.config import Config
from dbparallel.shell import RAY_JOB_VAR
from dbparallel.training.assembling import ASSEMBLING_FILE, assembler
from dbparallel.training.holder import (
    holder_alive,
    holder_driver,
    holder_parts,
    holder_start,
    process_to_stop,
    session_driver,
    session_start,
    still_runs,
)
from dbparallel.training.lease import BlockLease, lease_timeout_s
from dbparallel.training.process_record import read_record, record_runs
from dbparallel.training.running import runners
from dbparallel.training.storage import DamagedFile, Storage

POLL_S = 0.2  # how often the wait reads the leases again


@dataclass
class Hold:
    """A block whose lease names a holder, or a record (block None) that names a process:
    the run's assembly, or a ``--local`` process running the run; and what stopping it
    takes."""

    block: int | None
    kind: str  # signal (a process here, to be sent SIGTERM) | ending (its Ray run's driver is
    # gone, its block process ends by itself) | gone | lapsed (nothing runs it: nothing to
    # do) | elsewhere (another machine's or container's) | unknown (here, but /proc does not
    # say whether the pid is still its process's) | damaged (lease.json unreadable)
    holder: str = ""  # the lease's holder: session/host/pid/nonce/space/start
    host: str = ""  # the process to stop: the Ray run's driver, or the holder itself
    pid: str = ""
    driver: bool = False  # that process is a Ray run's driver, not the holder
    renewed_at: float = 0.0  # when the holder last renewed its lease (Unix time, its clock)
    age_s: float = 0.0  # since then
    timeout_s: float = 0.0  # after which its lease lapses: its writer's train.lease_timeout_s
    said: str = ""  # a damaged lease's error
    record: str = ""  # a record's path: assembling.json, or running/<id>.json
    blocks: list[int] | None = None  # a running/ record's: the blocks its process trains
    # (None: every block)

    @property
    def process(self) -> tuple[str, str]:
        """(host, pid) of the process to stop."""
        return self.host, self.pid

    @property
    def ray_driver(self) -> bool:
        """Whether the process to stop is a Ray run's driver: the driver of the lease's
        holder, or the holder itself where a record names a driver (its session does)."""
        return self.driver or session_driver(holder_parts(self.holder)[0]) == self.process

    @property
    def holder_pid(self) -> str:
        """The pid of the lease's holder (a Ray run's block process, or the process itself)."""
        return holder_parts(self.holder)[2]

    def holder_runs(self) -> bool | None:
        """Whether the lease's holder still runs (``still_runs``)."""
        return still_runs(self.holder_pid, holder_start(self.holder), self.renewed_at)

    def process_runs(self) -> bool | None:
        """Whether the process to stop (the holder, or its Ray run's driver) still runs."""
        if not self.driver:
            return self.holder_runs()
        return still_runs(self.pid, session_start(holder_parts(self.holder)[0]),
                          self.renewed_at)


def _hold(block: int | None, lease: dict[str, Any], timeout_s: float, now: float) -> Hold:
    """What stopping the holder of ``lease`` (one that names a holder) takes."""
    holder, renewed_at = str(lease["holder"]), float(lease["renewed_at"])
    host, pid, runs = process_to_stop(holder)
    hold = Hold(block, "gone", holder, host, pid, holder_driver(holder) is not None,
                renewed_at, max(0.0, now - renewed_at), timeout_s)
    if runs:  # its pid runs: the holder's process, or its driver's, if not taken over since
        runs = hold.process_runs()
        if runs is None:
            hold.kind = "unknown"
            return hold
    if runs and hold.process != (socket.gethostname(), str(os.getpid())):
        hold.kind = "signal"  # (this process holds no run: an earlier one's lease, kept)
    elif runs is None:
        hold.kind = "lapsed" if hold.age_s >= timeout_s else "elsewhere"
    elif not runs and hold.driver and holder_alive(holder) \
            and hold.holder_runs():  # (not a pid taken over since)
        hold.kind = "ending"  # Ray ends a gone driver's processes
    return hold


def find_holds(storage: Storage, cfg: Config, now: float | None = None) -> list[Hold]:
    """The blocks of the run in ``storage`` (trained with ``cfg``) whose leases name a holder,
    at Unix time ``now``: released leases, and blocks never started, are left out."""
    now = time.time() if now is None else now
    holds = []
    for block in range(cfg.model.blocks):
        try:
            lease = BlockLease(storage, block, "", 0.0).read()
        except DamagedFile as err:
            holds.append(Hold(block, "damaged", said=" ".join(str(err).split())))
            continue
        if lease and lease.get("holder"):
            holds.append(_hold(block, lease, lease_timeout_s(lease, cfg.train.lease_timeout_s),
                               now))
    return holds


def find_assembly(storage: Storage, now: float | None = None) -> Hold | None:
    """The process assembling the run in ``storage`` (block None), at Unix time
    ``now``: None where none is recorded, or where the process recorded is gone (a killed
    assembly's record: nothing to stop); lapsed where it lives on but assembles no more
    (``record_runs``)."""
    try:
        record = assembler(storage)
    except DamagedFile as err:
        return Hold(None, "damaged", said=" ".join(str(err).split()), record=ASSEMBLING_FILE)
    if record is None:
        return None
    return _recorded(ASSEMBLING_FILE, record, time.time() if now is None else now)


def find_runners(storage: Storage, now: float | None = None) -> list[Hold]:
    """The processes recorded running the run in ``storage`` (block None): ``--local`` ones,
    and Ray runs' drivers, at Unix time ``now``; records of processes that are gone (killed)
    are left out, and one of a process of this machine that runs the run no more
    (``record_runs``: its record's removal failed, and it lives on) is lapsed."""
    now = time.time() if now is None else now
    holds = []
    for path, record in runners(storage):
        if isinstance(record, DamagedFile):
            holds.append(Hold(None, "damaged", said=" ".join(str(record).split()), record=path))
            continue
        hold = _recorded(path, record, now)
        if hold is not None:
            blocks = record.get("blocks")
            hold.blocks = blocks if isinstance(blocks, list) else None
            holds.append(hold)
    return holds


def _recorded(path: str, record: dict[str, Any], now: float) -> Hold | None:
    """What stopping the process that the record at ``path`` names takes; None where it is
    gone."""
    hold = _hold(None, {"holder": record["holder"], "renewed_at": record["renewed"]},
                 record["timeout_s"], now)
    hold.record = path
    if hold.kind == "signal" and record_runs(record, now)[0] is False:
        hold.kind = "lapsed"  # it did what it records, and lives on: nothing to stop
    return None if hold.kind == "gone" else hold


def send_sigterm(holds: list[Hold]) -> dict[tuple[str, str], str]:
    """SIGTERM to the process of each hold to signal, once each; returns (host, pid) -> ""
    where it was sent, else why not (e.g. another user's process)."""
    sent: dict[tuple[str, str], str] = {}
    for hold in holds:
        if hold.kind != "signal" or hold.process in sent:
            continue
        try:
            os.kill(int(hold.pid), signal.SIGTERM)
            sent[hold.process] = ""
        except ProcessLookupError:  # it ended since it was asked: nothing left to stop
            sent[hold.process] = ""
        except PermissionError as err:
            sent[hold.process] = err.strerror or "not permitted"
    return sent


def ray_job_argv(pid: str) -> list[str] | None:
    """The command line of process ``pid`` of this machine where it is a Ray job's entrypoint
    (its environment holds RAY_JOB_VAR, which Ray's job manager sets for that process alone:
    a stopped job is resubmitted, not run again), else None (none, or /proc does not say)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            job = any(v.startswith(RAY_JOB_VAR.encode() + b"=") for v in f.read().split(b"\0"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [os.fsdecode(word) for word in f.read().split(b"\0")[:-1]]
    except OSError:  # ended, another user's, or not Linux
        return None
    return argv if job and argv else None


def hold_state(storage: Storage, hold: Hold) -> tuple[bool, bool]:
    """(released, ended) of a signalled or ending hold: its lease names another holder or
    none (released, or taken over); the process ended (the one signalled; for an ending hold,
    the block's own process). A record is released once it is gone."""
    if hold.block is None:
        try:
            record = read_record(storage, hold.record)
        except DamagedFile:  # read while rewritten on a store without atomic renames
            record = {"holder": hold.holder}
        except FileNotFoundError:  # removed between the look and the read
            record = None
        return (record or {}).get("holder") != hold.holder, hold.process_runs() is False
    try:
        lease = BlockLease(storage, hold.block, "", 0.0).read()
    except DamagedFile:  # read while rewritten on a store without atomic renames: ask again
        lease = {"holder": hold.holder}
    released = not lease or lease.get("holder") != hold.holder
    if hold.kind == "ending":
        return released, released or hold.holder_runs() is False
    return released, hold.process_runs() is False


def wait_ended(storage: Storage, holds: list[Hold], timeout_s: float,
               poll_s: float = POLL_S) -> list[tuple[bool, bool]]:
    """``hold_state`` of each of ``holds``, in order, once every one's process has ended, or
    once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = [hold_state(storage, h) for h in holds]
        if all(ended for _, ended in states) or time.monotonic() >= deadline:
            return states
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
