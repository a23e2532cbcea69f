"""Starting a run on Ray: connect, pin the data index, reserve one bundle per block that trains
at once (every block, or ``runtime.max_concurrent_blocks``: waves), start the actors as the
controller asks, drive it, write the report, clean up."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.errors import ConfigError
from dbparallel.runtime.controller import Controller
from dbparallel.runtime.data_check_ray import cluster_units
from dbparallel.runtime.metrics import (
    AssemblyRecorder,
    BlockRecorder,
    RaySink,
    free_port,
    port_line,
)
from dbparallel.runtime.placement import (
    cluster_now,
    refuse_what_cannot_fit_here,
    release,
    reserve_start,
    start_slots,
)
from dbparallel.runtime.progress import BlockBars
from dbparallel.runtime.ray_backend import RayBackend
from dbparallel.tasks import build_task
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.cluster_fit import Cluster
from dbparallel.training.curves import write_curves
from dbparallel.training.data_check import CheckResult, check_data, report_check
from dbparallel.training.data_pin import pin_data
from dbparallel.training.failure import record_given_up
from dbparallel.training.history import AssemblyLog
from dbparallel.training.lease import driver_session, release_session
from dbparallel.training.report import build_report, write_report
from dbparallel.training.run_dir import check_resumable, open_run
from dbparallel.training.status import resume_line
from dbparallel.training.storage import Storage

log = logging.getLogger(__name__)
STATE_API_VAR = "RAY_API_SERVER_ADDRESS"
PORT_ATTEMPTS = 3  # dashboard ports tried when the free one found is taken before Ray binds it
PROBE_S = 15.0  # how long a runtime.address / RAY_ADDRESS has to accept a TCP connection
# (a head that is still starting refuses at first: it is asked again every PROBE_EVERY_S)
PROBE_EVERY_S = 0.5


def connect(cfg: Config) -> bool:
    """Join the cluster at runtime.address / RAY_ADDRESS, or start a private local one.

    Returns True when this call connected (and so should shut Ray down at the end)."""
    if ray.is_initialized():
        return False
    address, key = cluster_address(cfg)
    if address:
        if address.startswith(("http://", "https://")):  # Ray would take it for a client's
            raise ConfigError(joining_failed(address, key, None))
        reached = probe(address, key)
        try:
            with _caller_sigterm():
                ray.init(address=address, logging_level="WARNING")
        except (ConnectionError, ValueError) as err:
            ray.shutdown()
            raise ConfigError(joining_failed(address, key, err, reached)) from None
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
                with _caller_sigterm():
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
def _caller_sigterm() -> Iterator[None]:
    """Keep the SIGTERM handler the caller set in Python (the CLI stops a run on it as on
    Ctrl-C) over the one ``ray.init`` installs, which aborts the process with a crash dump."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, before)


def cluster_address(cfg: Config) -> tuple[str, str]:
    """(the Ray address to join, the setting it came from): runtime.address, else
    RAY_ADDRESS; ("", "") for none (a private local instance)."""
    if cfg.runtime.address:
        return cfg.runtime.address, "runtime.address"
    return os.environ.get("RAY_ADDRESS", ""), "RAY_ADDRESS"


def joining_failed(address: str, key: str, err: Exception | None,
                   reached: bool = False) -> str:
    """What to tell a user whose ``address`` (from ``key``) Ray could not join; where
    something answered there (``reached``), that the cluster may want a token."""
    if address.startswith(("http://", "https://")):
        return (f"{key}={address} is a dashboard address, the one `ray job submit --address` "
                f"takes; a driver joins the cluster at its GCS address, HEAD:6379 (the port of "
                f"`ray start --head --port`), or `auto` on one of its nodes")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    said = f"{key}: Ray could not join the cluster at {address} ({first})"
    if not reached:
        return said
    return (f"{said}; where the cluster uses token authentication (Ray's default), give this "
            f"process its token: RAY_AUTH_MODE=token with ~/.ray/auth_token or RAY_AUTH_TOKEN "
            f"as on the head (`ray get-auth-token` there)")


def probe(address: str, key: str) -> bool:
    """ConfigError naming ``key`` where nothing accepts a connection at ``address`` within
    PROBE_S, a plain host:port (``auto``, ``local`` and ``ray://`` client addresses are left
    to Ray): joining one that does not answer retries for minutes, printing only Ray's GCS
    warnings. True where something answered (a plain host:port that was probed)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "://" in address:
        return False
    deadline = time.monotonic() + PROBE_S
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(left, 0.1)):
                return True
        except OSError as err:
            if left <= PROBE_EVERY_S:
                raise ConfigError(
                    f"{key}: no Ray cluster answers at {address} ({err}) after {PROBE_S:g} s; "
                    f"start one there (`ray start --head`), or correct {key} (empty: a "
                    f"private local instance)") from None
        time.sleep(PROBE_EVERY_S)


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


def detect_cluster(cfg: Config) -> Cluster:
    """The cluster at runtime.address / RAY_ADDRESS."""
    connected = connect(cfg)
    try:
        return cluster_now()
    finally:
        if connected:
            ray.shutdown()


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
    session = driver_session()  # this run's writers; a restarted actor takes its lease over
    connected = connect(cfg)
    pg, backend, bars, storage = None, None, None, None
    try:
        slots = start_slots(cfg, cluster_now())  # 0 fits here -> 1: reserve() names the keys
        refuse_what_cannot_fit_here(cfg, slots)  # before the data check and the run directory
        if validate:
            report_check(cfg, index, check_on_cluster(cfg, index, progress=progress))
        storage = open_run(cfg)
        pin_data(storage, index, start=True)
        resuming = resume_line(storage, cfg, list(range(cfg.model.blocks)))
        if resuming:
            print(resuming, flush=True)
        if slots < cfg.model.blocks:
            print(f"runtime: {slots} of {cfg.model.blocks} blocks train at once; the others "
                  f"queue and start as blocks finish (runtime.max_concurrent_blocks)", flush=True)
        pg, assembly_index, slots = reserve_start(cfg, slots, data_bytes)
        backend = RayBackend(cfg, pg, slots, session, assembly_index)
        bars = BlockBars(cfg.model.blocks,
                         [cfg.train.steps_of(b) for b in range(cfg.model.blocks)], progress)
        stall = [BlockRecorder(cfg.run.name, b, None, RaySink()) for b in range(cfg.model.blocks)]
        assembly = AssemblyRecorder(cfg.run.name, RaySink())
        bars.queue(list(range(slots, cfg.model.blocks)))  # the lowest blocks start first
        controller = Controller(cfg, backend, on_progress=bars.update, on_start=bars.start,
                                on_stall=lambda b, stalled: stall[b].stalled(stalled),
                                on_assembly_failed=lambda message: assembly.failed(),
                                on_block_failed=lambda b, step, err: record_given_up(
                                    storage, b, step, err),
                                on_assembled=AssemblyLog(storage, start).append,
                                slots=slots, restarts_before=[
                                    BlockCheckpoints(storage, b).restarts()
                                    for b in range(cfg.model.blocks)])
        metrics = controller.run()
        per_block = backend.summaries()
        for row, placed in zip(per_block, controller.schedule(), strict=True):
            row.update(placed)  # which blocks ran when: slot, started_s, finished_s
    finally:
        if bars is not None:
            bars.close()
        if backend is not None and storage is not None:
            # the leases are released (the session ended) before the block processes are
            # stopped, so that what stopping them causes is not recorded as their failure,
            # and again after, whatever stopping them met
            _release(storage, cfg.model.blocks, session)
            try:
                backend.close()
            finally:
                _release(storage, cfg.model.blocks, session)
        if pg is not None:
            release(pg)
        if connected:
            ray.shutdown()
    assert storage is not None
    report = build_report(cfg, per_block, metrics, time.perf_counter() - start)
    report["concurrent_blocks"] = slots
    report["replicas_per_block"] = cfg.runtime.replicas_per_block
    write_report(storage, report)
    write_curves(storage)
    return report


def _release(storage: Storage, blocks: int, session: str) -> None:
    try:
        release_session(storage, list(range(blocks)), session)
    except OSError as err:  # e.g. the storage is what failed: keep the first error
        log.warning("could not release the blocks' write leases: %s", err)
