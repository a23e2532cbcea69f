"""The processes that run a run, each recorded in its run directory for as long as it does.

A ``--local`` process (every block, or ``--block`` ones) holds a block's write lease only
while it trains that block, and ``assembling.json`` only while it assembles them: not while it
checks the data (before it writes config.yaml), nor between one block's release and the next
one's start. A Ray run's driver is named by no lease while it checks the data on the cluster,
waits for the cluster to place its blocks (up to runtime.placement_timeout_s) or starts their
processes. So that ``dbparallel stop`` (stop_run.py) finds either for the whole run, it records
itself in ``running/<id>.json`` from before its data check to its end (process_record.py:
named as a lease names its holder, renewed as a lease is, removed however it stops), with the
blocks it trains (``blocks``; None: every block, and the assembly). A Ray run's driver is
named under the run's session (``driver_session``), as its blocks' leases and its
``assembling.json`` name it, so that it is one process to stop. One file per process:
``--block`` processes of one run may run at once. A run directory that does not exist yet is
created for the record; where the run stops before it wrote anything else (a bad row, a
refusal, a stop), the directory is removed again (in an object store, the directory markers
pyarrow.fs wrote for it: storage.py ``remove_empty_dir``), as are records left by killed
processes of this machine (and long-lapsed ones of other machines) when the next process
starts.

A block's lease refuses a second writer of that block only while one trains it: the records
refuse a second run of the same blocks (``refuse_running``) for all that time, also while the
first checks the data, is between two blocks, assembles them or waits for placement.

Two runs of the same blocks that record themselves at the same instant would each find the
other's record. So a process writes its record unconfirmed (``confirmed``: false), then reads
the other live processes' records of its blocks and settles (``_settle``): where one is
unconfirmed and begun before its own (``since``, then the record's name: an order every
process reads alike), it withdraws its record and is refused; where unconfirmed ones begun
after its own are there, it reads again until each is gone (its process withdrew it on
finding this one) or confirmed (its process read before this one was written), and is
refused if one is still unconfirmed after its train.lease_timeout_s; where a confirmed one
is there (a record without the field is one), it withdraws its record and is refused; where
none is there at all, it confirms its record and goes on. So a process that goes on holds a
confirmed record for all its run, which refuses a later run of its blocks at once (here and
in ``refuse_running``), whatever the two machines' clocks say of ``since``; an unconfirmed
record refuses only the starts begun after it, for the short while its process settles.

Never both go on: of two such processes, the one whose last read was later read after the
other's record was written, which stays while its process runs: it found it unconfirmed and
begun before its own (refused), unconfirmed and begun after (it reads again), or confirmed
(refused). One goes on: the later one withdraws
once it finds the earlier one, which confirms once the later one is gone; or the later one
read before the earlier one wrote, and confirmed, and the earlier one, finding it confirmed,
is refused. Nothing here needs an atomic create-if-absent, which an object store lacks through
pyarrow.fs (storage.py ``create_bytes``): only that a read made after a write completed sees
it (a local disk; S3 and GCS read after write).

A record that was not renewed for its train.lease_timeout_s refuses nothing, also one of a
process of this machine that lives on (process_record.py ``record_runs``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dbparallel.config import Config
from dbparallel.errors import RunDirError
from dbparallel.shell import shell_path
from dbparallel.training.holder import holder_parts, this_process
from dbparallel.training.process_record import (
    Record,
    read_record,
    record_driver,
    record_runs,
    recorded,
)
from dbparallel.training.storage import DamagedFile, Storage, reach

RUNNING_DIR = "running"


@dataclass
class Runner:
    """A process recorded running the run that still runs (or is another machine's, and
    renewed its record in time)."""

    host: str
    pid: str
    driver: bool  # a Ray run's driver
    blocks: list[int] | None  # the blocks it trains (None: every block)
    here: bool = True  # of this machine and pid namespace: `dbparallel stop` here signals it

    @property
    def who(self) -> str:
        """``pid P on HOST``, or ``the Ray run whose driver is pid P on HOST``."""
        return ("the Ray run whose driver is " * self.driver) + f"pid {self.pid} on {self.host}"


def stopped_by(stop: str, hosts: str = "") -> str:
    """What stops a process recorded running a run, for the lines that name it: the command
    ``stop`` (quoted, e.g. ```dbparallel stop``` or one with the run's path) where it runs
    here; where it runs on ``hosts`` (``HOST``, or ``A and B``), the same command run there, as
    `dbparallel stop` signals processes of its own machine (and pid namespace) alone."""
    if not hosts:
        return f"{stop} stops it"
    return f"it runs on {hosts}, another machine or container: {stop} run there stops it"


@contextlib.contextmanager
def running(cfg: Config, blocks: list[int] | None = None, session: str = "") -> Iterator[None]:
    """Record this process as running ``cfg``'s run (``blocks``, default every block) in its
    run directory while the block runs, for ``session`` (a Ray run's ``driver_session``;
    default: a new one), renewed every third of train.lease_timeout_s; RunDirError, its
    record withdrawn, where another process recorded running one of its blocks settled
    before it (``_settle``)."""
    storage = reach(cfg.run_dir, f"run.dir={cfg.run_dir}")
    try:
        created = not storage.exists("")
        made = created or not storage.exists(RUNNING_DIR)
        storage.makedirs(RUNNING_DIR)
    except OSError as err:  # a file in the way, a read-only or missing mount
        raise RunDirError(f"run.dir={cfg.run_dir}: cannot create the run directory "
                          f"({getattr(err, 'strerror', None) or err})") from None
    try:
        with contextlib.ExitStack() as record:
            try:  # the run's first write: a store that lets this process read but not write
                _remove_gone(storage)
                kept = record.enter_context(recorded(
                    storage, f"{RUNNING_DIR}/{uuid.uuid4().hex}.json",
                    cfg.train.lease_timeout_s, session,
                    blocks=sorted(blocks) if blocks else None, confirmed=False))
                _settle(storage, kept, blocks, cfg.model.blocks)
            except OSError as err:  # (no credentials, a read-only bucket or mount)
                raise RunDirError(f"run.dir={cfg.run_dir}: cannot write in the run directory "
                                  f"({getattr(err, 'strerror', None) or err})") from None
            yield
    finally:
        # nothing else written (stopped before open_run): no directory left; in a folder that
        # was there (refused as a run directory), no empty folder of records
        for rel in (RUNNING_DIR, "") if created else (RUNNING_DIR,) if made else ():
            storage.remove_empty_dir(rel)  # (an object store's: its directory markers)


SETTLE_POLL_S = 0.05  # how often a start reads again while a later one withdraws


def _settle(storage: Storage, kept: Record, blocks: list[int] | None, count: int) -> None:
    """Settle whether this process goes on with its record ``kept`` (of ``blocks`` of
    ``count``) beside other live processes' records of one of them, confirming it where
    there is none; RunDirError naming the other process where it is refused (the rule: the
    module's docstring)."""
    order = (kept.fields["since"], kept.path)
    deadline = time.monotonic() + kept.fields["timeout_s"]
    while True:
        now = time.time()
        found = runners(storage)
        if kept.path not in dict(found):  # deleted under it: written back, read again
            if time.monotonic() >= deadline:
                raise RunDirError(f"{storage.uri(kept.path)}: this process's record does not "
                                  f"stay in the run directory (deleted as it is written)")
            kept.update()
            time.sleep(SETTLE_POLL_S)  # (a listing that lags: not a write in a tight loop)
            continue
        rivals = _rivals(found, blocks, count, now)
        unsettled = [(path, record) for path, record in rivals
                     if not record.get("confirmed", True)]
        ahead = [(path, record) for path, record in unsettled if (record["since"], path) < order]
        going = [(path, record) for path, record in rivals if record.get("confirmed", True)]
        if going:  # its process goes on: refused whatever the unconfirmed ones settle
            raise _refusal(storage, *going[0], now)
        if ahead or (unsettled and time.monotonic() >= deadline):
            raise _refusal(storage, *(ahead or unsettled)[0], now)
        if not unsettled:
            kept.update(confirmed=True)
            return
        time.sleep(SETTLE_POLL_S)


def runners(storage: Storage) -> list[tuple[str, dict[str, Any] | DamagedFile]]:
    """(path, record) of each process recorded in ``storage``'s ``running/`` (records of
    processes that are gone too), or (path, the DamagedFile) where one is no record."""
    found: list[tuple[str, dict[str, Any] | DamagedFile]] = []
    for name in storage.listdir(RUNNING_DIR):
        path = f"{RUNNING_DIR}/{name}"
        if not name.endswith(".json"):  # a write's temporary file
            continue
        try:
            record = read_record(storage, path, "delete it: its process, if it still runs, "
                                 "is found by a block's lease while it trains one")
        except DamagedFile as err:
            found.append((path, err))
        except FileNotFoundError:  # its process ended since it was listed
            continue
        except OSError:  # a read cut short as its process removed it (an object store's)
            if storage.exists(path):
                raise
            continue
        else:
            if record is not None:
                found.append((path, record))
    return found


def live_runners(storage: Storage, now: float) -> tuple[list[Runner], list[str]]:
    """Each process recorded running the run in ``storage`` that still runs at Unix time
    ``now`` (or is another machine's, and renewed its record in time), and the errors of the
    records that are damaged."""
    live, problems = [], []
    for _, record in runners(storage):
        if isinstance(record, DamagedFile):
            problems.append(" ".join(str(record).split()))
        elif (runs := record_runs(record, now)[0]) is not False:
            live.append(_runner(record, here=runs is True))
    return live, problems


def _runner(record: dict[str, Any], here: bool = True) -> Runner:
    """The process a record names, and the blocks it trains; ``here``: whether it is of
    this machine and pid namespace."""
    _, host, pid = holder_parts(record["holder"])
    blocks = record.get("blocks")
    return Runner(host, pid, record_driver(record), blocks if isinstance(blocks, list) else None,
                  here)


STALE_TIMEOUTS = 10  # another machine's record unrenewed for this many of its timeouts: gone


def _remove_gone(storage: Storage) -> None:
    """Remove the records of processes of this machine that are gone (killed outright), and
    those of another machine left unrenewed for STALE_TIMEOUTS of their timeouts (a killed
    pod, whose host name the next one does not share, leaves one at every restart). A lapsed
    record refuses nothing already; one a little past its timeout is kept for ``stop`` to
    name, and a process cut off from the store that long has stopped renewing it anyway."""
    now = time.time()
    for path, record in runners(storage):
        if not isinstance(record, dict):
            continue
        runs, lapsed = record_runs(record, now)
        stale = lapsed and now - record["renewed"] >= STALE_TIMEOUTS * record["timeout_s"]
        if (runs, lapsed) == (False, False) or stale:
            with contextlib.suppress(OSError):
                storage.delete(path)


def refuse_running(storage: Storage, blocks: list[int] | None, count: int) -> None:
    """RunDirError naming another process recorded running the run in ``storage`` (of
    ``count`` blocks) that trains one of ``blocks`` (None: every block, and the assembly):
    one that still runs on this machine, or another machine's that renewed its record within
    its train.lease_timeout_s. ``--block`` processes of disjoint blocks go on side by side; a
    record of this process, of a process of this machine that is gone (or runs the run no
    more: ``record_runs``), a lapsed one, or an unconfirmed one (the module's docstring)
    refuses nothing, nor does a damaged one (``status`` names it; the blocks' leases still
    guard them)."""
    now = time.time()
    for path, record in _rivals(runners(storage), blocks, count, now):
        if record.get("confirmed", True):
            raise _refusal(storage, path, record, now)


def _rivals(found: list[tuple[str, dict[str, Any] | DamagedFile]], blocks: list[int] | None,
            count: int, now: float) -> list[tuple[str, dict[str, Any]]]:
    """(path, record) of each record of ``found`` (``runners``) of another process that runs
    the run at Unix time ``now`` and trains one of ``blocks`` (None: every one of ``count``)."""
    ours = set(range(count) if blocks is None else blocks)
    rivals = []
    for path, record in found:
        if isinstance(record, DamagedFile) or _mine(record) \
                or record_runs(record, now)[0] is False:
            continue
        theirs = _runner(record).blocks
        if ours & set(range(count) if theirs is None else theirs):
            rivals.append((path, record))
    return rivals


def _refusal(storage: Storage, path: str, record: dict[str, Any], now: float) -> RunDirError:
    """The error that refuses a run while the process of the record at ``path`` runs it."""
    runs = record_runs(record, now)[0]
    runner = _runner(record)
    what = "every block" if runner.blocks is None else blocks_text(runner.blocks)
    held = (f"{storage.uri()}: another process runs this run ({runner.who}, training "
            f"{what}; its record renewed {max(0.0, now - record['renewed']):.0f} s ago)")
    stop = (f"stop it first (`dbparallel stop {shell_path(storage.uri())}` on {runner.host}"
            + (", Ctrl-C, or `ray job stop` for a submitted job" * runner.driver) + ")")
    if runs:
        return RunDirError(f"{held}, which still runs on this machine: {stop}, or run again "
                           f"once it has ended")
    return RunDirError(
        f"{held}; {stop} or wait its writer's train.lease_timeout_s={record['timeout_s']:g} s "
        f"for its record to lapse (if no process runs the run any more, e.g. a killed one, "
        f"delete {storage.uri(path)})")


def blocks_text(numbers: list[int]) -> str:
    """``block 0``, ``blocks 0, 1``."""
    return f"block{'s' * (len(numbers) != 1)} {', '.join(str(b) for b in numbers)}"


def _mine(record: dict[str, Any]) -> bool:
    """Whether a record names this process."""
    me, parts = this_process(), record["holder"].split("/")
    return parts[1:3] == [me["host"], me["pid"]] and parts[4:5] == [me["space"]]
