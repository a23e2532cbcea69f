"""Starting a run on Ray: connect (ray_connect.py), pin the data index, reserve one bundle
per block that trains at once (every block, or ``runtime.max_concurrent_blocks``: waves),
start the actors as the controller asks, drive it, write the report, clean up (the report is
written while the driver's assembling.json still says the run is being assembled), the
assembly actor last: its gauges keep the final scores exported for ``metrics.linger_s``. The
driver records itself in the run directory's ``running/`` for all of it
(training/running.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.runtime.controller import Controller
from dbparallel.runtime.data_check_ray import cluster_units
from dbparallel.runtime.linger import linger
from dbparallel.runtime.metrics import AssemblyRecorder, BlockRecorder, RaySink, series_line
from dbparallel.runtime.placement import (
    cluster_now,
    refuse_what_cannot_fit_here,
    release,
    reserve_start,
    start_slots,
)
from dbparallel.runtime.progress import BlockBars
from dbparallel.runtime.ray_backend import RayBackend, assembly_bundle
from dbparallel.runtime.ray_connect import (
    cluster_address,
    connect,
    disconnect,
    joined_name,
    metrics_line,
)
from dbparallel.tasks import build_task
from dbparallel.training.assembling import assembling
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.cluster_fit import Cluster
from dbparallel.training.curves import write_curves
from dbparallel.training.data_check import CheckResult, check_data, report_check
from dbparallel.training.data_pin import pin_data
from dbparallel.training.failure import record_given_up
from dbparallel.training.history import AssemblyLog
from dbparallel.training.holder import driver_session
from dbparallel.training.report import build_report, write_report
from dbparallel.training.resume import resume_line
from dbparallel.training.run_dir import (
    absolute_paths,
    check_resumable,
    open_run,
    refuse_a_passing_run_dir,
)
from dbparallel.training.run_id import ensure_run_id
from dbparallel.training.running import running
from dbparallel.training.session_lease import release_once_gone, release_session

log = logging.getLogger(__name__)
def detect_cluster(cfg: Config) -> Cluster:
    """The cluster at runtime.address / RAY_ADDRESS, named by where it was joined."""
    connected = connect(cfg)
    try:
        return dataclasses.replace(cluster_now(), joined=joined_name(cfg))
    finally:
        if connected:
            disconnect()


def check_on_cluster(cfg: Config, index: DataIndex, force: bool = False,
                     progress: bool | None = None) -> CheckResult:
    """The validation pass (``check_data``) as Ray tasks on the cluster this process joined,
    else at runtime.address or RAY_ADDRESS, else in an instance started (and stopped) here."""
    connected = connect(cfg)
    try:
        return check_data(cfg, index, force, progress, run=cluster_units(cfg, index))
    finally:
        if connected:
            disconnect()


def run_ray(cfg: Config, index: DataIndex | None = None,
            progress: bool | None = None, data_bytes: int = 0,
            validate: bool = False) -> dict[str, Any]:
    """Train every block as its own Ray actor, assemble, write report.json. The data index
    (default: opened from ``cfg.data``) is pinned in the run directory, where every actor
    reads it; each actor streams the data files itself (``data_bytes`` of rows at most, for
    the nodes' memory check; 0: not checked). ``validate``: first check every row once, on
    the cluster's CPUs (a bad row stops the run before the run directory is touched)."""
    start = time.perf_counter()
    build_task(cfg)  # config errors surface here, before any actor starts
    refuse_a_passing_run_dir(cfg)  # a job's relative run.dir, before it is made absolute
    cfg = absolute_paths(cfg)  # the driver's, not those of the nodes' processes
    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    if validate:
        check_resumable(cfg, index)  # a run directory that would be refused, before the check
    session = driver_session()  # this run's writers; a restarted actor takes its lease over
    # from here to its end `dbparallel stop` finds this driver, also while no block's lease
    # names it: joining the cluster, checking the data there, waiting for placement, starting
    # the actors
    with running(cfg, session=session):
        return _run(cfg, index, session, start, progress, data_bytes, validate)


def _run(cfg: Config, index: DataIndex, session: str, start: float, progress: bool | None,
         data_bytes: int, validate: bool) -> dict[str, Any]:
    """``run_ray``'s run, from joining the cluster to its report, for the driver ``session``
    (begun at ``time.perf_counter()`` ``start``)."""
    connected = connect(cfg)
    pg, backend, bars, storage, gauges = None, None, None, None, None
    done = False  # report.json is written
    final = contextlib.ExitStack()  # this driver's assembling.json, while the final assembly runs
    # blocks whose failure the driver records: given up, or an error that no writer recorded
    given_up: list[tuple[int, int | None, Exception]] = []
    try:
        if connected and cluster_address(cfg)[0]:  # a private instance printed its own
            print(metrics_line(ray.nodes()), flush=True)
        slots = start_slots(cfg, cluster_now())  # 0 fits here -> 1: reserve() names the keys
        refuse_what_cannot_fit_here(cfg, slots)  # before the data check and the run directory
        if validate:
            report_check(cfg, index, check_on_cluster(cfg, index, progress=progress))
        storage = open_run(cfg)
        run_id = ensure_run_id(storage)  # every process of the run labels its metrics with it
        pin_data(storage, index, start=True)
        print(series_line(cfg.run.name, run_id), flush=True)
        resuming = resume_line(storage, cfg, list(range(cfg.model.blocks)))
        if resuming:
            print(resuming, flush=True)
        if slots < cfg.model.blocks:
            print(f"runtime: {slots} of {cfg.model.blocks} blocks train at once; the others "
                  f"queue and start as blocks finish (runtime.max_concurrent_blocks)", flush=True)
        pg, assembly_index, slots = reserve_start(cfg, slots, data_bytes)
        backend = RayBackend(cfg, pg, slots, session, run_id, assembly_index)
        bars = BlockBars(cfg.model.blocks,
                         [cfg.train.steps_of(b) for b in range(cfg.model.blocks)], progress)
        gauges = RaySink()  # the driver's: set again while it runs, closed before it leaves
        stall = [BlockRecorder(cfg.run.name, run_id, b, None, gauges)
                 for b in range(cfg.model.blocks)]
        assembly = AssemblyRecorder(cfg.run.name, run_id, gauges)
        bars.queue(list(range(slots, cfg.model.blocks)))  # the lowest blocks start first
        def started(block: int) -> None:  # its stalled gauge reads 0 from its start, so
            bars.start(block)  # a healthy run's stall panel shows every block training
            stall[block].stalled(False)

        controller = Controller(cfg, backend, on_progress=bars.update, on_start=started,
                                on_stall=lambda b, stalled: stall[b].stalled(stalled),
                                on_assembly_failed=lambda message: assembly.failed(),
                                on_block_failed=lambda b, step, err: given_up.append(
                                    (b, step, err)),
                                on_assembled=AssemblyLog(storage, start).append,
                                # recorded as a --local run's is, for status and stop
                                on_final_assembly=lambda: final.enter_context(
                                    assembling(storage, cfg.train.lease_timeout_s, session)),
                                slots=slots, restarts_before=[
                                    BlockCheckpoints(storage, b).restarts()
                                    for b in range(cfg.model.blocks)])
        metrics = controller.run()
        per_block = backend.summaries()
        for row, placed in zip(per_block, controller.schedule(), strict=True):
            row.update(placed)  # which blocks ran when: slot, started_s, finished_s
        report = build_report(cfg, run_id, per_block, metrics, time.perf_counter() - start)
        report["concurrent_blocks"] = slots
        report["replicas_per_block"] = cfg.runtime.replicas_per_block
        # before assembling.json is removed: the run reads being assembled, then finished
        write_report(storage, report)
        if cfg.run.curves:
            write_curves(storage)
        done = True  # the final scores stay served a while (metrics.linger_s)
    finally:
        ending = backend is not None and storage is not None

        released: list[str] = []  # the processes that held leases as the run ended

        def leases() -> None:
            released.extend(release_session(storage, list(range(cfg.model.blocks)), session))

        def leases_again() -> None:  # a renewal under way as they were released lands late
            release_once_gone(storage, list(range(cfg.model.blocks)), session, released, 5.0)

        def free() -> None:
            release(pg)

        in_pg = done and bool(assembly_bundle(cfg))  # the assembly actor, kept for the wait

        def records() -> None:
            for block, step, err in given_up:  # one that cannot be written keeps no other out
                _each((f"record block {block}'s failure",
                       lambda b=block, n=step, e=err: record_given_up(storage, b, n, e, session)))

        # Every step runs whatever an earlier one met (a damaged lease file, a store out of
        # reach): stopping the processes, freeing the placement group and leaving Ray. The
        # leases are released (the session ended) before the block processes are stopped,
        # so that what stopping them causes is not recorded as their failure, and again
        # after; given-up blocks, and errors met by replicas other than rank 0, are recorded
        # once their processes are stopped (a restart of a stalled block or of a failed group
        # that took its lease over would clear the record).
        _each(("close the progress bars", bars.close if bars is not None else None),
              ("remove assembling.json", final.close),
              ("release the blocks' write leases", leases if ending else None),
              ("stop the block processes",
               (lambda: backend.close(keep_assembler=done)) if ending else None),
              ("release the blocks' write leases", leases_again if ending else None),
              ("record the blocks given up", records if ending else None),
              # the blocks' resources go before the wait, but the assembly actor's bundle
              # (runtime.assembly_cpus/gpus) is in the same group: the actor goes with it
              ("free the placement group", free if pg is not None and not in_pg else None),
              ("serve the final scores", (lambda: linger(
                  cfg.metrics.linger_s, "by Ray's metrics export")) if done else None),
              ("stop the assembly process", backend.close_assembler if ending else None),
              ("free the placement group", free if pg is not None and in_pg else None),
              ("stop exporting the driver's gauges", gauges.close if gauges is not None else None),
              ("disconnect from Ray", disconnect if connected else None))
    return report


def _each(*steps: tuple[str, Callable[[], None] | None]) -> None:
    """Run each clean-up step (None: none to do); one that fails is a warning (once, where a
    step done twice fails the same way): the run's own error, if any, is the one raised, and
    the steps after it still run. So do they after a KeyboardInterrupt, raised once they have
    run: a second Ctrl-C in a program that called ``dbparallel.train`` (the command tells it
    to wait) cut the cleanup short, leaving the blocks' leases held by the program, which
    refused its own rerun as another driver's."""
    said: set[str] = set()
    interrupted: KeyboardInterrupt | None = None
    for what, step in steps:
        if step is None:
            continue
        try:
            step()
        except KeyboardInterrupt as err:
            interrupted = interrupted or err
        except Exception as err:  # noqa: BLE001 (a warning, never the run's error)
            if (warning := f"could not {what}: {err}") not in said:
                said.add(warning)
                log.warning("%s", warning)
    if interrupted is not None:
        raise interrupted
