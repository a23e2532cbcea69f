"""The write leases of a run whose blocks train in Ray processes (training/lease.py): a block
process takes its block's lease first thing, counting a restart of the block where it is one;
the run's driver releases its session's leases at the end of the run, and marks the session
ended so that no process of it trains on."""

from __future__ import annotations

import math
import time

from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.holder import holder_alive, holder_parts, holder_start, still_runs
from dbparallel.training.lease import BlockLease
from dbparallel.training.storage import Storage


def take_lease(storage: Storage, block: int, session: str, timeout_s: float,
               restarted: bool | None = None) -> tuple[BlockLease, int]:
    """A Ray block process's lease of ``block``, taken before the rest of its start (reading
    the pinned data, resuming), so that an error there is recorded by the lease's holder
    (training/failure.py); and the block's restarts, counted one more where this process is a
    restart: where ``restarted`` says so (Ray knows it of an actor it started again), or, where
    None, where it took over a lease of its own session (Ray Train does not tell the workers of
    a group it started again so; the group's earlier incarnation left the lease held, whether
    it failed in training or at its start). A start that fails after this keeps the lease
    held, as a failure in training does: a restart takes it over, and the driver releases it
    at the end of its run."""
    lease = BlockLease(storage, block, session, timeout_s)
    lease.acquire()
    checkpoints = BlockCheckpoints(storage, block)
    restart = lease.took_over_own if restarted is None else restarted
    return lease, checkpoints.record_restart() if restart else checkpoints.restarts()


def release_session(storage: Storage, blocks: list[int], session: str) -> list[str]:
    """Release the leases that writers of ``session`` still hold (their processes were
    stopped without releasing them, e.g. actors killed at the end of a Ray run), and mark the
    session ended on every lease it wrote, also those its writers released (a process that
    stopped and gave it up): a process of it that Ray starts again later (a Ray Train group
    restarting after its run failed) is refused instead of training on. Another session takes
    the lease as usual. Returns the holders it released."""
    released = []
    for block in blocks:
        lease = BlockLease(storage, block, session, 0.0)
        current = lease.read()
        if current and current.get("session") == session \
                and (current.get("holder") or not current.get("ended")):
            storage.write_json(lease.path, {**current, "holder": "", "renewed_at": 0.0,
                                            "ended": True})
            if current.get("holder"):
                released.append(current["holder"])
    return released


def release_once_gone(storage: Storage, blocks: list[int], session: str, holders: list[str],
                      wait_s: float) -> None:
    """``release_session`` again once each of ``holders`` (what it released first) that runs
    on this machine has ended, ``wait_s`` in all at most. A block process whose lease was
    released while it renewed it (read, then written) writes the lease back after the
    release, and Ray's kill returns before the process has ended (a holder on another machine
    cannot be asked: where its write landed, the lease lapses after train.lease_timeout_s).
    The session's holders named in the leases now are waited for too: a first release cut
    short (a second Ctrl-C) released none, and left ``holders`` empty."""
    deadline = time.monotonic() + wait_s
    for holder in dict.fromkeys([*holders, *_holders(storage, blocks, session)]):
        while _runs(holder) and time.monotonic() < deadline:
            time.sleep(0.05)
    release_session(storage, blocks, session)


def _holders(storage: Storage, blocks: list[int], session: str) -> list[str]:
    """The holders of ``session`` that ``blocks``' leases name."""
    leases = (BlockLease(storage, block, session, 0.0).read() for block in blocks)
    return [lease["holder"] for lease in leases
            if lease and lease.get("session") == session and lease.get("holder")]


def _runs(holder: str) -> bool:
    """Whether ``holder``'s process runs on this machine: not gone, nor a zombie that its
    parent has not waited for yet (a killed process writes nothing more)."""
    pid, start = holder_parts(holder)[2], holder_start(holder)
    return bool(holder_alive(holder)) and still_runs(pid, start, math.inf) is not False
