"""One writer per block: a lease with a fencing generation in the block's directory.

``blocks/block_<b>/lease.json`` names the process that writes the block's checkpoints: its
``holder`` (the run's session and the process), a ``generation`` advanced by every takeover,
when it was last renewed, and the holder's own ``train.lease_timeout_s`` (``timeout_s``: the
lease lapses that long after its renewal, whatever the timeout of the process that reads it;
one of a lease written before it was recorded is the reader's). A writer takes the lease when
it starts, renews it while it trains, checks it before every checkpoint, and releases it when
it stops.

- A second writer (``--block 1`` twice, a rerun while the job still runs) finds a lease that
  another session renewed within its ``train.lease_timeout_s`` and is refused, naming the
  holder.
- Ray's restart of a block's actor belongs to the same session: it takes the lease over at
  once (the generation advances), since Ray runs at most one live incarnation of an actor.
- A lease that lapsed is taken over with a warning naming its holder and how long ago it
  renewed it: a writer one of whose steps or checkpoints took longer than the timeout loses
  the block, and its LeaseLost says to raise train.lease_timeout_s.
- A lease renewed in time by a process of this machine (same host, boot and pid namespace)
  that no longer runs, e.g. a killed ``--local`` run, is taken over at once: the rerun does
  not wait for it to lapse. Another machine's writer cannot be asked, so its lease is
  trusted until it lapses.
- So is one that an earlier run of this very process left held (a release cut short, by a
  second Ctrl-C in a program that calls ``dbparallel.train``): a process knows the leases it
  holds, and a rerun in it takes over one it no longer holds.
- Except where that process was a Ray actor whose run's driver still runs on this machine:
  Ray stops a block's actor once the block has trained, and its driver then assembles the
  blocks (or trains later waves) for as long as that takes. The lease is refused, however
  old, naming the driver, until the driver releases it at the run's end.
- A fenced-off writer (a zombie left behind by a network split, still running after its
  replacement took over) sees a newer generation at its next checkpoint and stops without
  writing.
- The generation outlives a deleted lease.json (which a refusal offers when its holder cannot
  be asked) once a writer wrote a checkpoint: the block's manifest records the highest
  generation of the writers that wrote one, and a new writer's passes it, so a zombie of the
  deleted lease stays fenced off instead of writing its lease back over the new one.
- A zombie that took the block over and wrote no checkpoint since may hold a generation as
  high as the next writer's, or higher. Deleting lease.json says that its writer is gone, so
  a writer stops where it finds lease.json gone at its check, or taken by another writer whose
  generation is not above its own and who is not the writer it took the block from (that one
  took the block after the lease was deleted). Only that writer, found with a lower
  generation, is a fenced-off writer whose renewal landed between its read and its write: the
  lease is written back over it, and that writer stops at its next check. (A renewal landing
  that late from a writer taken over twice since, or across a deletion, stops the newer writer
  instead: it needs a pause between one read and its write.)

Object stores have no compare-and-swap through ``pyarrow.fs``: the check before a save and the
save are two requests, so a zombie can slip one checkpoint in between. Because a block's
training is a pure function of (config, seed, step), that checkpoint holds the same weights as
its replacement's for the same step; what the fencing prevents is the lost updates of two
writers editing one manifest for hours.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dbparallel.errors import RunDirError
from dbparallel.shell import shell_path
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.holder import (
    driver_holding,
    holder_alive,
    holder_driver,
    holder_parts,
    new_holder,
    of_this_process,
)
from dbparallel.training.storage import DamagedFile, Storage, damaged

log = logging.getLogger(__name__)

# the holders of the leases this process took and has not given up: a lease of this process
# held by no other (one that an interrupted release left held, a Ctrl-C landing in it) is an
# earlier run's, which a rerun in this process takes over at once
_HOLDING: set[str] = set()


class LeaseLost(RunDirError):
    """Another writer took this block over; this process must not write it any more."""


class BlockLease:
    """The write lease of block ``block``; ``session`` identifies the run that holds it."""

    def __init__(self, storage: Storage, block: int, session: str, timeout_s: float,
                 clock: Any = time.time):
        self.storage, self.block, self.session = storage, block, session
        self.timeout_s, self.clock = timeout_s, clock
        self.path = f"blocks/block_{block}/lease.json"
        self.holder = new_holder(session)
        self.generation = 0
        self.renewed_at = 0.0  # when this writer last renewed the lease (its clock)
        self.replaced = ""  # the holder this writer took the lease from ("": none held it)

    def read(self) -> dict[str, Any] | None:
        """The lease (None: there is no lease.json); DamagedFile naming it when it is not one,
        saying to delete it: the lease holds nothing a rerun needs that the manifest does not
        keep (the generation that fences off earlier writers)."""
        if not self.storage.exists(self.path):
            return None
        try:
            found = self.storage.read_json(self.path)
        except DamagedFile as err:
            raise self._damaged(err.why) from None
        except FileNotFoundError:  # deleted since it was looked for
            return None
        if not _is_lease(found):
            raise self._damaged('expected {"generation", "holder", "session", "renewed_at"}')
        return found

    def _damaged(self, why: str) -> DamagedFile:
        return damaged(self.storage.uri(self.path), why,
                       f"delete it to go on: the next writer of block {self.block} takes it "
                       f"over, and the block's manifest keeps the lease generation that fences "
                       f"off earlier writers")

    def refuse_if_held(self, current: dict[str, Any] | None = None,
                       taking: bool = False) -> None:
        """RunDirError naming the holder while a writer of another session holds the lease
        (renewed within the timeout, and not a process of this machine that is gone; when
        ``taking`` it, a warning says whose lease is taken over)."""
        current = self.read() if current is None else current
        if not current or not current.get("holder") or current["session"] == self.session:
            return
        alive = holder_alive(current["holder"])
        if alive and of_this_process(current["holder"]) and current["holder"] not in _HOLDING:
            if taking:
                log.warning("block %d: its lease was left held by an earlier run of this "
                            "process, which stopped without releasing it (interrupted?); "
                            "taking it over", self.block)
            return
        driver = holder_driver(current["holder"])
        if driver_holding(current["holder"]) is not None:
            raise RunDirError(
                f"block {self.block} was trained by a run whose driver still runs on this "
                f"machine (pid {driver[1]}; it assembles the blocks or trains others): let it "
                f"end, or stop it first (`dbparallel stop {shell_path(self.storage.uri(''))}`, or "
                f"`ray job stop` for a submitted job)")
        age = self.clock() - float(current["renewed_at"])
        timeout_s = lease_timeout_s(current, self.timeout_s)
        session, host, pid = holder_parts(current["holder"])
        if alive is False:
            if taking:
                log.warning("block %d: its lease was held by pid %s of this machine, which no "
                            "longer runs (killed?); taking it over", self.block, pid)
            return
        if age >= timeout_s:
            if taking:  # a writer stalled past the timeout, or one of another machine
                log.warning(
                    "block %d: taking over its lease from pid %s on %s (session %s), which last "
                    "renewed it %.0f s ago, past train.lease_timeout_s=%g s; %s", self.block,
                    pid, host, session.partition("@")[0], age, timeout_s,
                    "that process still runs on this machine: it stops writing the block at "
                    "its next check (if its steps or checkpoints take that long, raise "
                    "train.lease_timeout_s)" if alive else
                    "if that process still runs (one of another machine cannot be asked), it "
                    "stops writing the block at its next check")
            return
        held = (f"block {self.block} is being trained by another process (pid {pid} on "
                f"{host}, session {session.partition('@')[0]}, lease renewed {age:.0f} s ago)")
        stop = f"stop it first (`dbparallel stop {shell_path(self.storage.uri(''))}` on {host})"
        if driver is not None:  # a Ray actor or worker of a driver
            stop = (f"stop the run's driver first (pid {driver[1]} on {driver[0]}: "
                    f"`dbparallel stop {shell_path(self.storage.uri(''))}` there, Ctrl-C, or "
                    f"`ray job stop` for a submitted job; Ray starts a block's own process "
                    f"again)")
        whose = "" if timeout_s == self.timeout_s else "its writer's "
        if alive:  # a process of this machine, which can be asked: it runs
            raise RunDirError(
                f"{held}, which still runs on this machine: {stop}, or run again once it has "
                f"ended" + (" (the block processes of a Ray run whose driver was killed end "
                            "within seconds)" if driver is not None else ""))
        raise RunDirError(
            f"{held}; {stop} or wait for its lease to lapse, {whose}train.lease_timeout_s="
            f"{timeout_s:g} s after its last renewal: in {max(timeout_s - age, 0):.0f} s if it "
            f"is not renewed again (if no process writes the block any more, e.g. a killed run, "
            f"delete {self.storage.uri(self.path)})")

    def acquire(self) -> int:
        """Take the lease (refused while another session's writer holds it); returns the new
        generation."""
        current = self.read()
        self.refuse_if_held(current, taking=True)
        if current and current["session"] == self.session and current.get("ended"):
            raise RunDirError(
                f"block {self.block}: the run that started this process has ended (its driver "
                f"released the block); this process stops")
        # a writer of this same session held it and never released it: this process is a
        # restart of a lost one (Ray restarted the block's actor or its group)
        self.took_over_own = bool(current and current.get("holder")
                                  and current["session"] == self.session)
        self.replaced = str(current.get("holder", "")) if current else ""
        # the manifest keeps the generation of every writer that wrote a checkpoint, also
        # where lease.json was deleted: a new writer's passes theirs
        recorded = BlockCheckpoints(self.storage, self.block).writer_generation()
        self.generation = max(int(current["generation"]) if current else 0, recorded) + 1
        _HOLDING.add(self.holder)
        self._write()
        now = self.read() or {}
        if self.replaced and now.get("holder") == self.replaced \
                and int(now.get("generation", 0)) < self.generation:
            # the writer this one replaces renewed between this one's read and its read-back:
            # the lease is this one's, as in check(), and that one's next check fails
            self._write()
            now = self.read() or {}
        if now.get("holder") != self.holder:  # a racing writer won
            _HOLDING.discard(self.holder)
            raise RunDirError(f"block {self.block}: another process took its lease while "
                              f"this one started; run one writer per block")
        return self.generation

    def check(self) -> None:
        """Before a write: LeaseLost if another writer took over; else renew the lease."""
        current = self.read()
        if current and current.get("holder") not in (self.holder, self.replaced, "") \
                and int(current["generation"]) < self.generation:
            raise LeaseLost(self._lost(current, deleted=True))
        if current and current.get("holder") != self.holder \
                and int(current["generation"]) < self.generation:
            # the writer this one replaced renewed between its read and its write (or a
            # release landed late, which holds no one): the lease is still this writer's, and
            # that one's next check fails
            self._write()
            return
        if not current or current.get("holder") != self.holder:
            raise LeaseLost(self._lost(current))
        self._write()

    def _lost(self, current: dict[str, Any] | None, deleted: bool = False) -> str:
        """Why this writer lost the lease to ``current`` (None: lease.json is gone; ``deleted``:
        taken with a lower generation since it was deleted), and, where its own renewal is
        older than the timeout, that its lease lapsed while it worked."""
        if current and deleted:
            session, host, pid = holder_parts(current["holder"])
            by = (f"another process took this block since (pid {pid} on {host}, session "
                  f"{session.partition('@')[0]}; lease generation {current['generation']}, "
                  f"this process holds {self.generation}: a lower one, which a writer takes "
                  f"where {self.storage.uri(self.path)} was deleted)")
        elif current and current.get("holder"):
            session, host, pid = holder_parts(current["holder"])
            by = (f"another process took this block over (pid {pid} on {host}, session "
                  f"{session.partition('@')[0]}; lease generation {current['generation']}, "
                  f"this process holds {self.generation})")
        elif current and current.get("ended"):
            by = "its run has ended (its driver released the block)"
        elif current:
            by = (f"its lease was released by another process (lease generation "
                  f"{current['generation']}, this process holds {self.generation})")
        else:
            by = f"its lease, {self.storage.uri(self.path)}, is gone (deleted?)"
        said = f"block {self.block}: {by}; this process stops writing"
        idle = self.clock() - self.renewed_at
        if idle >= self.timeout_s:
            said += (f". Its lease had lapsed: this process last renewed it {idle:.0f} s ago, "
                     f"past train.lease_timeout_s={self.timeout_s:g} s; if one of its steps or "
                     f"checkpoints takes that long, raise train.lease_timeout_s")
        return said

    def still_held(self) -> bool:
        """Whether this process holds the lease and its run goes on: not taken over, not
        released by its driver (which ends the run's session before stopping its processes,
        so that an error the stop causes, e.g. a replica's collective cut short, is no
        failure)."""
        current = self.read()
        return bool(current and current.get("holder") == self.holder
                    and not current.get("ended"))

    def release(self) -> None:
        """Give the lease up (a later writer takes it at once), if this process holds it."""
        _HOLDING.discard(self.holder)  # first: a release cut short leaves it to a rerun
        current = self.read()
        if current and current.get("holder") == self.holder:
            self.storage.write_json(self.path, {**current, "holder": "", "renewed_at": 0.0})

    def _write(self) -> None:
        self.renewed_at = self.clock()
        self.storage.write_json(self.path, {
            "generation": self.generation, "holder": self.holder, "session": self.session,
            "renewed_at": self.renewed_at, "timeout_s": self.timeout_s})


def _is_lease(found: Any) -> bool:
    """Whether ``found`` has the fields ``BlockLease._write`` writes, of their types (a lease
    written before ``timeout_s`` was recorded has none)."""
    return (isinstance(found, dict) and type(found.get("generation")) is int
            and isinstance(found.get("holder"), str) and isinstance(found.get("session"), str)
            and type(found.get("renewed_at")) in (int, float)
            and ("timeout_s" not in found
                 or (type(found["timeout_s"]) in (int, float) and found["timeout_s"] > 0)))


def lease_timeout_s(lease: dict[str, Any], default: float) -> float:
    """How long after its renewal ``lease`` lapses: its holder's train.lease_timeout_s, which
    the holder renews it by (``default``, the reader's, for a lease that does not record it)."""
    return float(lease.get("timeout_s", default))
