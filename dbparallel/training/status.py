"""Where a run stands, read from its run directory alone: ``dbparallel status RUN_DIR``.

Nothing here needs Ray, the data or the driver: a run on a cluster (its directory in object
storage) is read the same way as a local one, while it trains or after. Each block is

- ``done``: a checkpoint of its last step (train.steps, or its train.block_steps count), or
  of a later one (a rerun lowered train.steps: the block trains no more, and keeps the weights
  of the step it reached; its row says so), unless a live writer holds it (a ``--block``
  process given more steps than another one wrote to config.yaml since: it trains on);
- ``training``: its write lease was renewed within its writer's train.lease_timeout_s, which
  the lease records (a lease written before it did: the run's config.yaml's); the writer
  renews it at every metrics line it writes (in an object store, those it uploads) and
  checkpoint, and at least every quarter of that timeout;
- ``held by its driver``: its process (a Ray actor or worker) is gone, while its run's driver
  still runs on this machine (it assembles the blocks, trains others, or starts the block's
  process again), however old its lease: a rerun of the block is refused until that driver
  ends (training/holder.py ``driver_holding``); told on its own line;
- ``stopped``: it has a checkpoint, a metrics line or a lease (a process started it) but no
  live writer (a stopped or killed run: the same ``train`` command resumes it from its
  checkpoint). A lease renewed in time by a process of this machine that no longer runs
  counts as no writer (unless its run's driver holds it, above); one of another machine
  cannot be asked, and is trusted until it lapses;
- ``failed``: not done, no live writer, and its last process failed on an error (a bad row,
  an unreadable checkpoint, ...), or the driver gave it up (lost past train.max_restarts,
  stalled): training/failure.py; told on its own line;
- ``not started``: neither.

The run is ``being assembled`` while every block is done and the process that assembles
them (a ``--local`` run's, or a Ray run's driver) records itself in assembling.json
(assembling.py) and still runs, or runs on another machine that cannot be asked; a record whose
process is gone is an assembly cut short (a process killed outright: a stop removes it). A
live ``--local`` process recorded in ``running/`` (running.py) that neither writes a block nor
assembles them (between two blocks, or checking the data) is listed in ``runners``; a Ray
run's driver recorded there that no block's row names (it checks the data on the cluster,
waits for placement or starts the blocks' processes), in ``drivers``.

Times come from the writers' clocks (the lease's renewal, a metrics line's ``time``), so a
machine whose clock is off shows ages off by as much. A damaged file of one block is shown on
its row and does not stop the others from being read; a damaged report.json is named in place
of its age, and counts as not written.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dbparallel.config import Config
from dbparallel.errors import RunDirError
from dbparallel.training.assembling import assembler
from dbparallel.training.checkpoint import BlockCheckpoints, first_save_cut_short
from dbparallel.training.failure import last_failure
from dbparallel.training.history import ASSEMBLY_FILE, metrics_file, read_lines
from dbparallel.training.holder import driver_holding, holder_alive, holder_driver, holder_parts
from dbparallel.training.lease import BlockLease, lease_timeout_s
from dbparallel.training.process_record import record_driver, record_runs
from dbparallel.training.report import read_report
from dbparallel.training.run_id import read_run_id
from dbparallel.training.running import live_runners
from dbparallel.training.storage import DamagedFile, Storage


@dataclass
class BlockStatus:
    """One block's row."""

    block: int
    state: str  # done | training | held by its driver | failed | stopped | not started |
    # damaged
    steps: int  # the steps the block trains for
    checkpoint_step: int | None = None  # its newest training state
    logged_step: int | None = None  # its newest metrics line
    loss: float | None = None
    heldout_loss: float | None = None  # the newest line's that has one
    samples_per_s: float | None = None
    logged_age_s: float | None = None  # seconds since the newest line was written
    writer: str = ""  # host/pid of the live lease holder
    driver: str = ""  # host/pid of the driver that started it, when another process
    writer_alive: bool | None = None  # its process runs (None: on another machine)
    held_by_driver: bool = False  # its process is gone, its run's driver runs on: a rerun
    # is refused until that driver ends
    lease_age_s: float | None = None  # seconds since the holder last renewed its lease
    restarts: int = 0
    problem: str = ""  # why the block's files could not be read
    failure: str = ""  # a failed block's error
    failed_step: int | None = None  # the step it was taking (None: it failed at its start)
    failed_after: bool = False  # it had taken that step, and failed writing after it
    failed_age_s: float | None = None  # seconds since it failed


@dataclass
class RunStatus:
    """A run's blocks, and its latest assembly (None until one was made)."""

    run_dir: str
    task: str
    blocks: list[BlockStatus]
    assembly: dict[str, Any] | None = None  # the newest assembly.jsonl line
    report: bool = False  # report.json written: the run finished and was assembled
    report_age_s: float | None = None
    report_problem: str = ""  # why report.json, which is there, cannot be read
    assembler: str = ""  # host/pid of the process assembling the blocks (assembling.json)
    assembler_driver: bool = False  # that process is a Ray run's driver
    assembler_alive: bool | None = None  # it runs (None: on another machine; False: gone,
    # the assembly was cut short)
    assembler_lapsed: bool = False  # it did not renew its record for its
    # train.lease_timeout_s (so counted as gone: process_record.py ``record_runs``)
    assembling_since: float | None = None  # when it began (Unix time, its clock)
    assembling_age_s: float | None = None  # seconds since then
    runners: list[str] = field(default_factory=list)  # host/pid of each --local process that
    # runs the run (running/) and neither writes a block nor assembles them now
    drivers: list[str] = field(default_factory=list)  # and of each Ray run's driver that
    # runs it while no block's row names it (its data check, placement, its actors' start)
    elsewhere: list[str] = field(default_factory=list)  # those of runners and drivers of
    # another machine or container: `dbparallel stop` signals them only where they run
    problems: list[str] = field(default_factory=list)
    run: str = ""  # run.name: its metrics' label ``run``
    run_id: str | None = None  # the run directory's id, their label ``run_id`` (None: none yet,
    # or trained before runs had ids)

    @property
    def state(self) -> str:
        """``being assembled`` (every block done, its assembler runs), ``finished`` (every
        block done, report written), else the blocks' states."""
        states = {b.state for b in self.blocks}
        if states == {"done"} and self.assembler and self.assembler_alive is not False:
            return "being assembled"
        if states == {"done"} and self.report:
            return "finished"
        if states == {"done"} and self.report_problem:
            return "trained, report.json damaged"
        if states == {"done"} and self.assembler:
            return "trained, assembly cut short"
        if states == {"done"}:
            return "trained, not yet assembled"
        return ", ".join(f"{sum(b.state == s for b in self.blocks)} {s}"
                         for s in ("training", "held by its driver", "failed", "stopped",
                                   "not started", "damaged", "done")
                         if s in states)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state}


LEASE_READS = 3  # reads of a block whose lease changed hands while status read it


def _block(storage: Storage, cfg: Config, block: int, now: float) -> BlockStatus:
    """The block's row, from its files read between two reads of its lease that agree on
    its holder. A writer writes the block's files (its last checkpoint, its failure) while
    it holds the lease, and releases it after; a rerun takes the lease before it removes
    failed.json. Files read across such a change are of two moments (a last checkpoint not
    yet written and the lease released: a finished block ``stopped``), so they are read
    again, LEASE_READS times at most."""
    for _ in range(LEASE_READS):
        row, settled = _read_block(storage, cfg, block, now)
        if settled:
            break
    return row


def _read_block(storage: Storage, cfg: Config, block: int,
                now: float) -> tuple[BlockStatus, bool]:
    """The block's row, and whether its lease names the same holder after its files were
    read as before."""
    row = BlockStatus(block, "not started", cfg.train.steps_of(block))
    try:
        lease = BlockLease(storage, block, "", 0.0).read()
        checkpoints = BlockCheckpoints(storage, block)
        states = checkpoints.steps("state")
        row.checkpoint_step = states[-1] if states else None
        unlisted = checkpoints.unlisted()
        if unlisted and not first_save_cut_short(unlisted):
            raise RunDirError(f"{checkpoints.manifest_path} is missing (deleted?) while the "
                              f"block's directory holds checkpoint files "
                              f"({', '.join(unlisted)}); train refuses it, and "
                              f"train.on_unreadable=restart discards them")
        row.restarts = checkpoints.restarts()
        lines = [r for r in read_lines(storage, metrics_file(block)) if isinstance(r, dict)]
        _read_lines(row, lines, now)
        _read_lease(row, lease, cfg.train.lease_timeout_s, now)  # old leases: config's
        failure = last_failure(storage, block)
        settled = _hands(BlockLease(storage, block, "", 0.0).read()) == _hands(lease)
    except (RunDirError, AttributeError, KeyError, TypeError, ValueError) as err:
        row.state, row.problem = "damaged", " ".join(str(err).split())
        return row, True
    live = bool(row.writer) and row.writer_alive is not False
    reached = row.checkpoint_step is not None and row.checkpoint_step >= row.steps
    # past the steps config.yaml holds now, with a live writer: a --block process given more
    # steps than another one wrote there since trains on to its own
    if reached and not (live and row.checkpoint_step > row.steps):
        row.state = "done"
    elif live:
        row.state = "training"
    elif row.held_by_driver:  # the driver may ask it again: its failure, if any, is told
        row.state = "held by its driver"
        _read_failure(row, failure, now)
    elif failure is not None:
        row.state = "failed"
        _read_failure(row, failure, now)
    elif row.checkpoint_step is not None or lines or lease is not None:
        row.state = "stopped"  # a lease: a process started it, and stopped before a line
    return row, settled


def _hands(lease: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """Who holds ``lease``, as a taking over, a release or the run's end changes it (not a
    renewal)."""
    return None if lease is None else (lease.get("holder"), lease.get("generation"),
                                       lease.get("ended"))


def _read_failure(row: BlockStatus, failure: dict[str, Any] | None, now: float) -> None:
    """The error its last process failed on (training/failure.py), its step and age."""
    if failure is None:
        return
    row.failed_step, row.failed_after = failure["step"], failure.get("taken") is True
    kind = failure.get("type")
    row.failure = f"{kind}: {failure['error']}" if isinstance(kind, str) and kind \
        else failure["error"]
    if isinstance(failure.get("time"), (int, float)):
        row.failed_age_s = max(0.0, now - failure["time"])


def _read_lines(row: BlockStatus, lines: list[dict[str, Any]], now: float) -> None:
    """The newest metrics line's step, loss and rate, and the newest held-out loss."""
    if not lines:
        return
    last = lines[-1]
    row.logged_step, row.loss = last.get("step"), last.get("loss")
    row.samples_per_s = last.get("samples_per_s")
    if isinstance(last.get("time"), (int, float)):
        row.logged_age_s = max(0.0, now - last["time"])
    held = [r["heldout_loss"] for r in lines if r.get("heldout_loss") is not None]
    row.heldout_loss = held[-1] if held else None


def _read_lease(row: BlockStatus, lease: dict[str, Any] | None, timeout_s: float,
                now: float) -> None:
    """The writer (host/pid) of a lease renewed within its holder's timeout (``timeout_s``
    where it records none), or held by its run's driver however old (``driver_holding``);
    none for a released or lapsed one."""
    if not lease or not lease.get("holder"):
        return
    age = now - float(lease.get("renewed_at", 0.0))
    row.held_by_driver = driver_holding(str(lease["holder"])) is not None
    if age < lease_timeout_s(lease, timeout_s) or row.held_by_driver:
        _, host, pid = holder_parts(lease["holder"])
        row.writer, row.lease_age_s = f"{host}/{pid}", max(0.0, age)
        row.writer_alive = holder_alive(str(lease["holder"]))
        driver = holder_driver(str(lease["holder"]))
        row.driver = "/".join(driver) if driver else ""


def run_status(storage: Storage, cfg: Config, now: float | None = None) -> RunStatus:
    """The status of the run in ``storage``, trained with ``cfg``, at Unix time ``now``."""
    now = time.time() if now is None else now
    blocks = [_block(storage, cfg, b, now) for b in range(cfg.model.blocks)]
    status = RunStatus(storage.uri(), cfg.task, blocks, run=cfg.run.name)
    try:
        status.run_id = read_run_id(storage)
    except DamagedFile as err:
        status.problems.append(" ".join(str(err).split()))
    try:
        assemblies = read_lines(storage, ASSEMBLY_FILE)
        status.assembly = assemblies[-1] if assemblies else None
    except RunDirError as err:
        status.problems.append(" ".join(str(err).split()))
    # the record before report.json: its process writes report.json, then removes it
    _read_assembler(status, storage, now)
    status.report, status.report_age_s, status.report_problem = read_report(storage, now)
    _read_runners(status, storage, now)
    return status


def _read_runners(status: RunStatus, storage: Storage, now: float) -> None:
    """The live processes recorded running the run (--local ones, Ray runs' drivers) that
    are not named already as a block's writer, its driver or the assembler; a damaged record
    is a problem."""
    live, problems = live_runners(storage, now)
    named = {b.writer for b in status.blocks} | {b.driver for b in status.blocks} \
        | {status.assembler}
    for runner in live:
        if (who := f"{runner.host}/{runner.pid}") not in named:
            (status.drivers if runner.driver else status.runners).append(who)
            if not runner.here:
                status.elsewhere.append(who)
    status.problems += problems


def _read_assembler(status: RunStatus, storage: Storage, now: float) -> None:
    """The process assembling the blocks, when it began, and whether it still runs; a
    damaged record is a problem (and no assembler)."""
    try:
        record = assembler(storage)
    except DamagedFile as err:
        status.problems.append(" ".join(str(err).split()))
        return
    except FileNotFoundError:  # removed since: the assembly ended
        return
    if record is None:
        return
    _, host, pid = holder_parts(record["holder"])
    status.assembler, status.assembler_driver = f"{host}/{pid}", record_driver(record)
    status.assembler_alive, status.assembler_lapsed = record_runs(record, now)
    status.assembling_since = float(record["since"])
    status.assembling_age_s = max(0.0, now - status.assembling_since)
