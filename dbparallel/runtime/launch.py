"""Starting a run on Ray: connect, pin the data index, reserve one bundle per block that trains
at once (every block, or ``runtime.max_concurrent_blocks``: waves), start the actors as the
controller asks, drive it, write the report, clean up."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.errors import UserError
from dbparallel.runtime.assembler_actor import AssemblerActor
from dbparallel.runtime.block_actor import BlockActor
from dbparallel.runtime.block_group import BlockGroup
from dbparallel.runtime.controller import BlockUnavailable, Controller, Event
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    RaySink,
    check_port_free,
)
from dbparallel.runtime.progress import BlockBars
from dbparallel.tasks import build_task
from dbparallel.training.curves import write_curves
from dbparallel.training.history import AssemblyLog
from dbparallel.training.lease import release_session
from dbparallel.training.plan import Cluster, concurrent_blocks
from dbparallel.training.report import build_report, write_report
from dbparallel.training.run_dir import open_run, pin_data

log = logging.getLogger(__name__)


def connect(cfg: Config) -> bool:
    """Join the cluster at runtime.address / RAY_ADDRESS, or start a private local one.

    Returns True when this call connected (and so should disconnect at the end)."""
    if ray.is_initialized():
        return False
    address = cfg.runtime.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, logging_level="WARNING")
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {}
    if cfg.metrics.port:
        check_port_free(cfg.metrics.port)
        kwargs["_metrics_export_port"] = cfg.metrics.port
        print(f"metrics: http://127.0.0.1:{cfg.metrics.port}/metrics "
              "(ray_dbparallel_block_loss, ...)", flush=True)
    if cfg.runtime.object_store_memory:
        kwargs["object_store_memory"] = cfg.runtime.object_store_memory
    # Ray Train (blocks with replicas) cleans its placement groups through the state API,
    # which the dashboard serves
    ray.init(address="local", num_cpus=cfg.runtime.num_cpus or None,
             include_dashboard=cfg.runtime.replicas_per_block > 1,
             logging_level="WARNING", _system_config={"metrics_report_interval_ms": 2000},
             **kwargs)
    return True


class RayBackend:
    """The controller's view of the actors: submit calls, collect finished ones. A block is
    one actor, or with runtime.replicas_per_block > 1 a Ray Train worker group
    (block_group.py) that places its own workers; ``pg`` then holds only the assembly
    actor's bundle, if any, at ``assembly_index``."""

    def __init__(self, cfg: Config, pg: Any, slots: int, session: str,
                 assembly_index: int | None = None):
        self.cfg, self.pg, self.slots, self.session = cfg, pg, slots, session
        self.assembly_index = slots if assembly_index is None else assembly_index
        self.actors: dict[int, Any] = {}  # the blocks training now
        self.groups: dict[int, BlockGroup] = {}  # the blocks with replicas training now
        self.finished: dict[int, dict[str, Any]] = {}  # summaries of the blocks done
        self.assembler: Any = None
        self.pending: dict[ray.ObjectRef, tuple[str, int | None]] = {}
        self.queue: Any = None  # where the groups' rank 0 workers post their progress

    def start_block(self, block: int, slot: int) -> None:
        r, t = self.cfg.runtime, self.cfg.train
        if r.replicas_per_block > 1:
            if self.queue is None:
                from ray.util.queue import Queue

                self.queue = Queue(actor_options={"num_cpus": 0})
            self.groups[block] = BlockGroup(self.cfg, block, self.session, self.queue)
            return
        self.actors[block] = ray.remote(BlockActor).options(
            num_cpus=r.cpus_per_block, num_gpus=r.gpus_per_block,
            max_restarts=t.max_restarts, max_task_retries=t.max_restarts,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, slot),
        ).remote(self.cfg, block, self.session)

    def finish_block(self, block: int) -> None:
        if block in self.groups:
            group = self.groups[block]
            group.fitted.result(timeout=300)
            self._drain()  # its summary was posted before its fit ended
            self.finished[block] = self.groups.pop(block).finish()
            return
        actor = self.actors.pop(block)
        self.finished[block] = ray.get(actor.summary.remote(), timeout=300)
        ray.kill(actor, no_restart=True)  # its slot goes to the next queued block

    def submit_train(self, block: int, until: int) -> None:
        if block in self.groups:
            self.groups[block].request(until)
            return
        self.pending[self.actors[block].train.remote(until)] = ("train", block)

    def submit_assemble(self, write_samples: bool) -> None:
        if self.assembler is None:
            r = self.cfg.runtime
            placed = {}
            if assembly_bundle(self.cfg):  # reserved with the blocks' bundles
                placed["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    self.pg, self.assembly_index)
            self.assembler = ray.remote(AssemblerActor).options(
                num_cpus=r.assembly_cpus, num_gpus=r.assembly_gpus, name=None,
                max_restarts=self.cfg.train.max_restarts,
                max_task_retries=self.cfg.train.max_restarts, **placed,
            ).remote(self.cfg)
        self.pending[self.assembler.assemble.remote(write_samples)] = ("assemble", None)

    def poll(self, timeout_s: float) -> list[Event]:
        if not self.groups:
            return self._poll_calls(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # the groups answer through the queue: look at it every 0.2 s
            self._drain()
            events = [e for g in self.groups.values() for e in g.events()]
            events += self._poll_calls(0 if events else min(0.2, timeout_s))
            if events or time.monotonic() >= deadline:
                return events
            if not self.pending:
                time.sleep(0.2)

    def _drain(self) -> None:
        if self.queue is None:
            return
        for kind, block, payload in self.queue.get_nowait_batch(self.queue.qsize()):
            if block in self.groups:
                self.groups[block].take(kind, payload)

    def _poll_calls(self, timeout_s: float) -> list[Event]:
        if not self.pending:
            return []
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout_s)
        if ready:
            more, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        events = []
        for ref in ready:
            kind, block = self.pending.pop(ref)
            try:
                events.append(Event(kind, block, result=ray.get(ref)))
            except ray.exceptions.ActorUnavailableError as err:  # e.g. its node was lost
                events.append(Event(kind, block, error=BlockUnavailable(str(err))))
            except ray.exceptions.RayError as err:
                events.append(Event(kind, block, error=_root_cause(err)))
        return events

    def restart_block(self, block: int) -> None:
        if block in self.groups:
            self.groups[block].restart()  # Ray Train starts the group again
            return
        ray.kill(self.actors[block], no_restart=False)  # Ray restarts it; the call is retried

    def summaries(self) -> list[dict[str, Any]]:
        running = dict(zip(self.actors, ray.get([a.summary.remote() for a in
                                                 self.actors.values()], timeout=300),
                           strict=True))
        for block, group in self.groups.items():  # only when the run stopped early
            running[block] = group.summary or {"block": block, **(group.latest or {})}
        return [row for _, row in sorted({**self.finished, **running}.items())]

    def close(self) -> None:
        for group in self.groups.values():
            group.stop()
        for actor in [*self.actors.values(), self.assembler]:
            if actor is not None:
                ray.kill(actor, no_restart=True)


def _root_cause(err: BaseException) -> BaseException:
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def assembly_bundle(cfg: Config) -> dict[str, float]:
    """What the assembly actor reserves (nothing when it asks for no CPU and no GPU)."""
    r = cfg.runtime
    return {k: v for k, v in (("CPU", r.assembly_cpus), ("GPU", r.assembly_gpus)) if v}


def cluster_now() -> Cluster:
    """The connected cluster's CPUs and GPUs, as they are now."""
    have = ray.cluster_resources()
    return Cluster(have.get("CPU", 0.0), have.get("GPU", 0.0), "detected")


def detect_cluster(cfg: Config) -> Cluster:
    """The cluster at runtime.address / RAY_ADDRESS."""
    connected = connect(cfg)
    try:
        return cluster_now()
    finally:
        if connected:
            ray.shutdown()


def reserve(cfg: Config, slots: int, replicas: int = 1) -> Any:
    """A placement group of ``replicas`` bundles per block slot and one for the assembly
    actor, reserved before training starts; UserError naming the keys if the cluster cannot
    fit it."""
    r = cfg.runtime
    bundle = {"CPU": r.cpus_per_block, **({"GPU": r.gpus_per_block} if r.gpus_per_block else {})}
    bundles = [dict(bundle) for _ in range(slots * replicas)]
    if assembly_bundle(cfg):
        bundles.append(assembly_bundle(cfg))
    pg = placement_group(bundles, strategy="SPREAD")
    try:
        ray.get(pg.ready(), timeout=r.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        have = ray.cluster_resources()
        extra = (f" + the assembly actor's {assembly_bundle(cfg)} (runtime.assembly_cpus/"
                 f"assembly_gpus)" if assembly_bundle(cfg) else "")
        each = f"{replicas} replicas (runtime.replicas_per_block) x " if replicas > 1 else ""
        raise UserError(
            f"runtime.cpus_per_block/gpus_per_block: {slots} blocks x {each}{bundle}{extra} "
            f"do not fit the cluster ({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs) "
            f"within runtime.placement_timeout_s={r.placement_timeout_s:g}") from None
    return pg


def reserve_blocks(cfg: Config, slots: int) -> tuple[Any, int | None]:
    """The run's placement group and the assembly actor's bundle in it. Blocks with replicas
    are placed by Ray Train, group by group: the cluster is checked to fit ``slots`` groups
    and the assembly actor now, and only the assembly actor's bundle is kept."""
    R = cfg.runtime.replicas_per_block
    if R == 1:
        return reserve(cfg, slots), slots
    remove_placement_group(reserve(cfg, slots, R))
    return (reserve(cfg, 0), 0) if assembly_bundle(cfg) else (None, None)


def run_ray(cfg: Config, index: DataIndex | None = None,
            progress: bool | None = None) -> dict[str, Any]:
    """Train every block as its own Ray actor, assemble, write report.json. The data index
    (default: opened from ``cfg.data``) is pinned in the run directory, where every actor
    reads it; each actor streams the data files itself."""
    start = time.perf_counter()
    storage = open_run(cfg)
    build_task(cfg)  # config errors surface here, before any actor starts
    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    pin_data(storage, index)
    session = uuid.uuid4().hex  # this run's writers; a restarted actor takes its lease over
    connected = connect(cfg)
    pg, backend, bars = None, None, None
    try:
        slots = concurrent_blocks(cfg, cluster_now())  # 0 fits -> 1: reserve() names the keys
        if slots < cfg.model.blocks:
            print(f"runtime: {slots} of {cfg.model.blocks} blocks train at once; the others "
                  f"queue and start as blocks finish (runtime.max_concurrent_blocks)", flush=True)
        pg, assembly_index = reserve_blocks(cfg, slots)
        backend = RayBackend(cfg, pg, slots, session, assembly_index)
        bars = BlockBars(cfg.model.blocks,
                         [cfg.train.steps_of(b) for b in range(cfg.model.blocks)], progress)
        stall = [BlockRecorder(cfg.run.name, b, None, RaySink()) for b in range(cfg.model.blocks)]
        assembly = AssemblyRecorder(cfg.run.name, RaySink())
        bars.queue(list(range(slots, cfg.model.blocks)))  # the lowest blocks start first
        controller = Controller(cfg, backend, on_progress=bars.update, on_start=bars.start,
                                on_stall=lambda b, stalled: stall[b].stalled(stalled),
                                on_assembly_failed=lambda message: assembly.failed(),
                                on_assembled=AssemblyLog(storage, start).append,
                                slots=slots)
        metrics = controller.run()
        per_block = backend.summaries()
        for row, placed in zip(per_block, controller.schedule(), strict=True):
            row.update(placed)  # which blocks ran when: slot, started_s, finished_s
    finally:
        if bars is not None:
            bars.close()
        if backend is not None:
            backend.close()
            try:
                release_session(storage, list(range(cfg.model.blocks)), session)
            except OSError as err:  # e.g. the storage is what failed: keep the first error
                log.warning("could not release the blocks' write leases: %s", err)
        if pg is not None:
            remove_placement_group(pg)
        if connected:
            ray.shutdown()
    report = build_report(cfg, per_block, metrics, time.perf_counter() - start)
    report["concurrent_blocks"] = slots
    report["replicas_per_block"] = cfg.runtime.replicas_per_block
    write_report(storage, report)
    write_curves(storage)
    return report
