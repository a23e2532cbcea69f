"""Placing a run on the cluster: how many blocks train at once, and the placement group
that reserves their CPUs and GPUs (and the assembly actor's) before anything trains."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from dbparallel.config import Config
from dbparallel.errors import UserError
from dbparallel.runtime.node_memory import crowded_nodes
from dbparallel.runtime.ray_backend import assembly_bundle
from dbparallel.training.cluster_fit import Cluster, concurrent_blocks, room

log = logging.getLogger(__name__)


def cluster_now() -> Cluster:
    """The connected cluster's CPUs and GPUs, as they are now."""
    have = ray.cluster_resources()
    return Cluster(have.get("CPU", 0.0), have.get("GPU", 0.0), "detected")


class PlacementTimeout(UserError):
    """The cluster did not make room for the run within runtime.placement_timeout_s;
    ``room``: the blocks it has room for by then."""

    def __init__(self, message: str, room: int):
        super().__init__(message)
        self.room = room


def start_slots(cfg: Config, cluster: Cluster) -> int:
    """Blocks that train at once (``concurrent_blocks``: a joined cluster with no room for a
    block yet is asked for every block); this machine's own instance is never joined by more
    nodes."""
    if _this_machine_alone(cfg):
        cluster = dataclasses.replace(cluster, source="this machine")
    return concurrent_blocks(cfg, cluster)


def reserve_start(cfg: Config, slots: int, data_bytes: int = 0) -> tuple[Any, int | None, int]:
    """``reserve_blocks`` for ``slots`` blocks at once, and ``slots``. When the cluster does
    not make room for them all in time but has room for some by then (fewer nodes joined than
    the run asked for), the run trains in waves of those instead, unless
    runtime.max_concurrent_blocks was set by hand."""
    try:
        return (*reserve_blocks(cfg, slots, data_bytes), slots)
    except PlacementTimeout as err:
        now = err.room
        if cfg.runtime.max_concurrent_blocks or not 1 <= now < slots:
            raise
    print(f"runtime: after runtime.placement_timeout_s={cfg.runtime.placement_timeout_s:g} s "
          f"the cluster has room for {now} of the {slots} blocks asked; they train {now} at a "
          f"time, the others queue", flush=True)
    return (*reserve_blocks(cfg, now, data_bytes), now)


RELEASE_WAIT_S = 10.0  # the most a run's end waits for Ray to remove its placement group


def release(pg: Any, wait_s: float = RELEASE_WAIT_S) -> bool:
    """Remove the run's placement group, waiting ``wait_s`` at most; False if Ray did not
    answer by then (its processes on this machine were stopped with the run, e.g. by a
    SIGTERM to the whole process group: ``timeout``, Slurm, systemd), when Ray removes it
    anyway once this driver's job ends."""
    done = threading.Event()

    def remove() -> None:
        with contextlib.suppress(Exception):  # a failure here is Ray's to clean up
            remove_placement_group(pg)
        done.set()

    threading.Thread(target=remove, name="dbparallel-release-placement", daemon=True).start()
    if done.wait(wait_s):
        return True
    log.warning("Ray did not remove the run's placement group within %g s (are its "
                "processes on this machine stopped?); it goes when this driver ends", wait_s)
    return False


def reserve(cfg: Config, slots: int, replicas: int = 1) -> Any:
    """A placement group of ``replicas`` bundles per block slot and one for the assembly
    actor, reserved before training starts; UserError naming the keys if the cluster cannot
    fit it."""
    r = cfg.runtime
    bundles = _bundles(cfg, slots, replicas)
    _check_room(cfg, bundles)
    pg = placement_group(bundles, strategy="SPREAD")
    try:
        ray.get(pg.ready(), timeout=r.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        have = cluster_now()
        extra = (f" + the assembly actor's {assembly_bundle(cfg)} (runtime.assembly_cpus/"
                 f"assembly_gpus)" if assembly_bundle(cfg) else "")
        each = f"{replicas} replicas (runtime.replicas_per_block) x " if replicas > 1 else ""
        fits = room(cfg, have)
        hint = ("not even one block fits it now: lower them, or add nodes" if not fits else
                f"it has room for {fits} at once now: runtime.max_concurrent_blocks={fits}, "
                f"or a longer runtime.placement_timeout_s")
        raise PlacementTimeout(
            f"runtime.cpus_per_block/gpus_per_block: {slots} blocks x {each}{_block_bundle(cfg)}"
            f"{extra} "
            f"do not fit the cluster ({have.cpus:g} CPUs, {have.gpus:g} GPUs) "
            f"within runtime.placement_timeout_s={r.placement_timeout_s:g}; {hint}",
            fits) from None
    except BaseException:  # Ctrl-C or SIGTERM while it waits: a program that joined Ray
        # itself stays connected, and its cluster would place the group later and hold it
        release(pg)  # (a bounded wait: the stop may have ended Ray's processes here too)
        raise
    return pg


def refuse_what_cannot_fit_here(cfg: Config, slots: int) -> None:
    """reserve()'s UserError for ``slots`` blocks and the assembly actor, raised before the
    run directory is touched, when the run is on this machine's own Ray instance and asks for
    more than it has in all (a named cluster may yet grow: reserve() waits for it)."""
    if _this_machine_alone(cfg):
        _check_room(cfg, _bundles(cfg, slots, cfg.runtime.replicas_per_block))


def _block_bundle(cfg: Config) -> dict[str, float]:
    r = cfg.runtime
    return {"CPU": r.cpus_per_block, **({"GPU": r.gpus_per_block} if r.gpus_per_block else {})}


def _bundles(cfg: Config, slots: int, replicas: int) -> list[dict[str, float]]:
    """One bundle per replica of each block slot, and the assembly actor's, if it has one."""
    bundles = [_block_bundle(cfg) for _ in range(slots * replicas)]
    if assembly_bundle(cfg):
        bundles.append(assembly_bundle(cfg))
    return bundles


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
    asked = ", ".join(f"{v:g} {k}{'s' * (v != 1)}" for k, v in short.items())
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
    try:
        for warning in crowded_nodes(pg, slots * R, data_bytes):
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    except BaseException:  # not yet the caller's to release
        release(pg)
        raise
    if R == 1:
        return pg, slots
    remove_placement_group(pg)
    return (reserve(cfg, 0), 0) if assembly_bundle(cfg) else (None, None)
