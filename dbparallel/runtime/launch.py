"""Starting a run on Ray: connect, pin the data index, reserve one bundle per block that trains
at once (every block, or ``runtime.max_concurrent_blocks``: waves), start the actors as the
controller asks, drive it, write the report, clean up."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.errors import UserError
from dbparallel.runtime.controller import Controller
from dbparallel.runtime.data_check_ray import cluster_units
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    RaySink,
    free_port,
    port_line,
)
from dbparallel.runtime.node_memory import crowded_nodes
from dbparallel.runtime.progress import BlockBars
from dbparallel.runtime.ray_backend import RayBackend, assembly_bundle
from dbparallel.tasks import build_task
from dbparallel.training.curves import write_curves
from dbparallel.training.data_check import CheckResult, check_data, check_line
from dbparallel.training.history import AssemblyLog
from dbparallel.training.lease import release_session
from dbparallel.training.plan import Cluster, concurrent_blocks
from dbparallel.training.report import build_report, write_report
from dbparallel.training.run_dir import check_resumable, open_run, pin_data

log = logging.getLogger(__name__)
STATE_API_VAR = "RAY_API_SERVER_ADDRESS"
PORT_ATTEMPTS = 3  # dashboard ports tried when the free one found is taken before Ray binds it


def connect(cfg: Config) -> bool:
    """Join the cluster at runtime.address / RAY_ADDRESS, or start a private local one.

    Returns True when this call connected (and so should shut Ray down at the end)."""
    if ray.is_initialized():
        return False
    address = cfg.runtime.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, logging_level="WARNING")
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _quiet_auth_notice()
    kwargs: dict[str, Any] = {}
    if cfg.metrics.port:
        port = free_port(cfg.metrics.port)
        kwargs["_metrics_export_port"] = port
        print(f"{port_line(cfg.metrics.port, port)} (ray_dbparallel_block_loss, ...)",
              flush=True)
    if cfg.runtime.object_store_memory:
        kwargs["object_store_memory"] = cfg.runtime.object_store_memory
    replicas = cfg.runtime.replicas_per_block > 1
    for attempt in range(PORT_ATTEMPTS):
        with state_api_here() if replicas else contextlib.nullcontext() as port:
            if port:
                kwargs["dashboard_port"] = port
            try:
                ray.init(address="local", num_cpus=cfg.runtime.num_cpus or None,
                         include_dashboard=replicas, logging_level="WARNING",
                         _system_config={"metrics_report_interval_ms": 2000}, **kwargs)
                return True
            except ValueError as err:
                ray.shutdown()
                # the free port found for the dashboard was taken before Ray bound it: another
                if "already occupied" not in str(err) or attempt == PORT_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def state_api_here() -> Iterator[int]:
    """A free port for a private instance's dashboard, which serves Ray's state API, with
    RAY_API_SERVER_ADDRESS pointing there inside the block: an instance started there passes
    the variable to every Ray process it starts; this process gets its own value back after.

    Ray Train (blocks with replicas) watches its controller through the state API. Without an
    address, that API asks the cluster recorded by the last `ray start` on this machine
    (/tmp/ray/ray_current_cluster), which is not a private instance and may be long gone: each
    query then waits 40 s for a GCS that never answers, and every group's end printed a
    traceback. This process keeps no such variable, so its own clients (`ray job submit
    --address ...`, which the variable would override) still reach what they name."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = os.environ.get(STATE_API_VAR)
    os.environ[STATE_API_VAR] = f"http://127.0.0.1:{port}"
    try:
        yield port
    finally:
        if saved is None:
            os.environ.pop(STATE_API_VAR, None)
        else:
            os.environ[STATE_API_VAR] = saved


def _not_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


def _quiet_auth_notice() -> None:
    """Drop Ray's warning, printed as a private instance starts, that token authentication is
    on and how to turn it off: it stays on (README, security)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _not_auth_notice not in logger.filters:
        logger.addFilter(_not_auth_notice)


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
    _check_room(cfg, bundles)
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


def _check_room(cfg: Config, bundles: list[dict[str, float]]) -> None:
    """A UserError now if ``bundles`` ask for more than the Ray instance of this machine has
    in all (no autoscaler adds to it: waiting runtime.placement_timeout_s would be for
    nothing); on a named cluster (runtime.address, RAY_ADDRESS), a line saying what it
    waits for."""
    have = ray.cluster_resources()
    need: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            need[key] = need.get(key, 0.0) + value
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return
    asked = ", ".join(f"{v:g} {k}" for k, v in short.items())
    having = f"{have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs"
    if _this_machine_alone(cfg):
        r = cfg.runtime
        asking = {"CPU": (("runtime.cpus_per_block", r.cpus_per_block),
                          ("runtime.assembly_cpus", r.assembly_cpus)),
                  "GPU": (("runtime.gpus_per_block", r.gpus_per_block),
                          ("runtime.assembly_gpus", r.assembly_gpus))}
        keys = "/".join(key for kind in short for key, value in asking.get(kind, ()) if value)
        raise UserError(f"{keys}: the run asks for {asked} in all, and this machine's Ray "
                        f"instance has {having}; lower it, or run on a cluster "
                        f"(runtime.address)")
    print(f"placement: the cluster has {having} now and the run asks for {asked}; waiting up "
          f"to runtime.placement_timeout_s={cfg.runtime.placement_timeout_s:g} s for nodes "
          f"to join", flush=True)


def _this_machine_alone(cfg: Config) -> bool:
    """Whether the connected Ray instance is this machine alone and no cluster was named
    (runtime.address, RAY_ADDRESS): nothing will add nodes to it. A notebook joined to a
    cluster with ray.init(address=...) has nodes elsewhere."""
    if cfg.runtime.address or os.environ.get("RAY_ADDRESS"):
        return False
    here = ray.util.get_node_ip_address()
    return all(n["NodeManagerAddress"] == here for n in ray.nodes() if n["Alive"])


def reserve_blocks(cfg: Config, slots: int, data_bytes: int = 0) -> tuple[Any, int | None]:
    """The run's placement group and the assembly actor's bundle in it. Blocks with replicas
    are placed by Ray Train, group by group: the cluster is checked to fit ``slots`` groups
    and the assembly actor now, and only the assembly actor's bundle is kept. A node whose
    block processes would hold over half its memory in data rows (``data_bytes`` each) is
    warned about."""
    R = cfg.runtime.replicas_per_block
    pg = reserve(cfg, slots, R)
    for warning in crowded_nodes(pg, slots * R, data_bytes):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if R == 1:
        return pg, slots
    remove_placement_group(pg)
    return (reserve(cfg, 0), 0) if assembly_bundle(cfg) else (None, None)


def check_on_cluster(cfg: Config, index: DataIndex, force: bool = False,
                     progress: bool | None = None) -> CheckResult:
    """The validation pass (``check_data``) as Ray tasks on the cluster this process joined,
    else at runtime.address or RAY_ADDRESS, else in an instance started (and stopped) here."""
    connected = connect(cfg)
    try:
        return check_data(cfg, index, force, progress, run=cluster_units(cfg, index))
    finally:
        if connected:
            ray.shutdown()


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
    if index is None:
        from dbparallel.data.sources import open_data

        index = open_data(cfg.data)
    if validate:
        check_resumable(cfg, index)  # a run directory that would be refused, before the check
    session = uuid.uuid4().hex  # this run's writers; a restarted actor takes its lease over
    connected = connect(cfg)
    pg, backend, bars, storage = None, None, None, None
    try:
        if validate:
            line = check_line(check_on_cluster(cfg, index, progress=progress))
            if line:
                print(line, flush=True)
        storage = open_run(cfg)
        pin_data(storage, index)
        slots = concurrent_blocks(cfg, cluster_now())  # 0 fits -> 1: reserve() names the keys
        if slots < cfg.model.blocks:
            print(f"runtime: {slots} of {cfg.model.blocks} blocks train at once; the others "
                  f"queue and start as blocks finish (runtime.max_concurrent_blocks)", flush=True)
        pg, assembly_index = reserve_blocks(cfg, slots, data_bytes)
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
        if backend is not None and storage is not None:
            backend.close()
            try:
                release_session(storage, list(range(cfg.model.blocks)), session)
            except OSError as err:  # e.g. the storage is what failed: keep the first error
                log.warning("could not release the blocks' write leases: %s", err)
        if pg is not None:
            remove_placement_group(pg)
        if connected:
            ray.shutdown()
    assert storage is not None
    report = build_report(cfg, per_block, metrics, time.perf_counter() - start)
    report["concurrent_blocks"] = slots
    report["replicas_per_block"] = cfg.runtime.replicas_per_block
    write_report(storage, report)
    write_curves(storage)
    return report
