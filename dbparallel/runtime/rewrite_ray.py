"""``data encode`` and ``data reshard`` spread over a Ray cluster: one task per file written.

Each task writes one file of the new data set (``data/reshard_parts.py``: the same files, row
group for row group, as the single pass in one process writes), reading its rows itself from
the shared data. ``data encode --device cuda`` gives each task a GPU of its own and the
cluster's CPUs per GPU for decoding, and keeps the task's worker process for the next file, so
that an encoder loaded when its module is imported is loaded once per GPU. The encoder's
module, where it is the user's own code (not an installed package), is sent with the tasks
(data/own_code.py); an installed one must be installed on every node.

A bad row makes its task stop writing and only decode the rest of its rows; once the driver
learns of it, the tasks still to end are cancelled and started again to decode only (one CPU
each, no GPU, no encoder: ``check``), and the first bad rows in index order are named once all
have ended. So a bad image costs the cluster's GPUs no more encoding. Any other
failure, or an interrupt, cancels the tasks and removes every file written. ``--out`` must be
a folder that every node writes into and this machine reads (an object-store URI or a shared
file system): a file a task wrote that this machine does not see stops the command, and every
node removes the files the tasks wrote there.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dbparallel.config import Config
from dbparallel.data.own_code import OwnCode, unpack
from dbparallel.data.parquet_out import Resharded, check_empty, out_metadata, remove_written
from dbparallel.data.reshard import NOT_TEXT, Rewrite
from dbparallel.data.reshard_parts import Part, PartDone, parts_of, visible, write_part
from dbparallel.data.shards import DataIndex
from dbparallel.data.tables import resolve_path
from dbparallel.errors import MAX_BAD_ROWS, BadRows, DataError, UserError
from dbparallel.runtime.ray_connect import connect, disconnect
from dbparallel.training.progress import Progress

CANCEL_WAIT_S = 30.0  # seconds waited at most for cancelled tasks to end before files go
RETRIES = 2  # times a task lost with its node is started again


@dataclass
class ClusterRewrite:
    """What each task does: ``make(threads)`` gives it its rewrite (None: copy the rows),
    decoding on ``threads`` threads; ``gpus`` per task (0 or 1); ``code``: the user's own
    module it imports, sent to the tasks' workers; ``by_value``: the user's own modules
    whose functions and classes ``make`` holds, pickled with their code (the workers cannot
    import them); ``agree``: raises where the files' rewrite stats (in index order) do not
    agree (latents of different shapes), before the files are kept; ``check(threads)``: a
    rewrite whose ``check`` decodes as ``make``'s does, without its costs (an encoder), for
    the tasks that only name bad rows (None: ``make``'s own)."""

    make: Callable[[int], Rewrite | None]
    gpus: int = 0
    code: OwnCode | None = None
    by_value: tuple[str, ...] = ()
    agree: Callable[[list[object]], object] | None = None
    check: Callable[[int], Rewrite | None] | None = None


@ray.remote(max_retries=RETRIES)
def _write(index: DataIndex, part: Part, out: str, shard_rows: int, job: ClusterRewrite,
           metadata: dict[bytes, bytes], threads: int) -> PartDone:
    import torch

    torch.set_num_threads(threads)  # the task's CPUs, not the node's
    if job.code is not None:
        unpack(job.code)
    return write_part(index, part, out, shard_rows, job.make(threads), metadata)


@ray.remote(max_retries=RETRIES, num_cpus=1)
def _check(index: DataIndex, part: Part, out: str, shard_rows: int,
           make: Callable[[int], Rewrite | None], metadata: dict[bytes, bytes]) -> PartDone:
    """``part``'s bad rows, as ``make(1)`` decodes them; nothing written."""
    import torch

    torch.set_num_threads(1)
    return write_part(index, part, out, shard_rows, make(1), metadata, write=False)


@ray.remote(num_cpus=0)
def _remove(out: str, names: list[str]) -> None:
    fs, root = resolve_path(out)
    remove_written(fs, root, names, created=False)


def task_cpus(gpus: int) -> int:
    """CPUs of each task: one, or with a GPU each the cluster's CPUs per GPU (they decode
    what the GPU encodes)."""
    if not gpus:
        return 1
    total = ray.cluster_resources()
    if total.get("GPU", 0) < 1:
        raise UserError("--device: the Ray cluster has no GPU; give --device cpu, or join a "
                        "cluster with GPUs")
    return max(1, int(total.get("CPU", 1) // total["GPU"]))


def rewrite_on_cluster(index: DataIndex, out: str, shard_rows: int, job: ClusterRewrite,
                       progress: bool | None = None, desc: str = "rewrite"
                       ) -> tuple[Resharded, list[object]]:
    """Write every split of ``index`` into ``out`` (a new or empty folder every node writes
    into) as ``job`` says, one Ray task per file; what ``reshard`` returns, and each file's
    rewrite ``stats`` in index order. BadRows names the first bad rows in index order (up to
    MAX_BAD_ROWS), once every task has ended; then, and on any other failure, nothing is
    left in ``out``. ``progress``: a bar, or (False) a line every 15 s (default: a bar where
    stderr is a terminal)."""
    if index.kind != "images":
        raise DataError(f"{index.source}: {NOT_TEXT}")
    threads = task_cpus(job.gpus)  # before --out is made: a refusal leaves nothing
    fs, root = resolve_path(out)
    created = check_empty(fs, root, out)
    parts = parts_of(index, shard_rows)
    options: dict = {"num_cpus": threads, "num_gpus": job.gpus, "scheduling_strategy": "SPREAD"}
    if job.gpus:
        options["max_calls"] = 0  # keep the worker: its encoder stays loaded on its GPU
    shared = ray.put(index)  # once, not once per task
    metadata = {s: out_metadata(index, s) for s in index.present()}  # a footer per split
    pending: dict[ray.ObjectRef, int] = {}
    finished: dict[int, PartDone] = {}
    stopped: list[ray.ObjectRef] = []  # tasks cancelled once a bad row was met
    unseen = False  # a task's file this machine does not see: each node holds its own
    try:
        task = _write.options(**options)
        with _by_value(job.by_value):  # pickled once, not once per task (its weights)
            sent = ray.put(job)
        pending = {task.remote(shared, p, out, shard_rows, sent, metadata[p.split], threads): i
                   for i, p in enumerate(parts)}
        with Progress(sum(p.rows for p in parts), desc, "rows", tty=progress) as bar:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready)
                finished[i] = _result(ready)
                name = finished[i].file
                if name is not None and not visible(out, name):
                    unseen = True
                    raise UserError(
                        f"--out {out}: a task wrote {name} on another node, which this "
                        f"machine does not see there; give a folder every node writes into "
                        f"and this machine reads (an object-store URI, or a shared file "
                        f"system)")
                bar.update(parts[i].rows)
                if finished[i].bad and not stopped and pending:  # the rest only decode
                    stopped = list(pending)
                    _stop(stopped)
                    check = ray.put(job.check or job.make)
                    pending = {_check.remote(shared, parts[j], out, shard_rows, check,
                                             metadata[parts[j].split]): j
                               for j in pending.values()}
        bad = [row for i in sorted(finished) for row in finished[i].bad]
        if bad:
            raise BadRows(bad[:MAX_BAD_ROWS], stopped=len(bad) >= MAX_BAD_ROWS)
        if job.agree is not None:
            job.agree([finished[i].stats for i in sorted(finished)])
    except BaseException:  # a failed task, bad rows, an interrupt: nothing is left
        _cancel(list(pending) + stopped)
        remove_written(fs, root, [p.name for p in parts], created)
        if unseen:  # the other tasks wrote theirs on their nodes' disks too
            _remove_on([n["NodeID"] for n in ray.nodes() if n["Alive"]], out,
                       [p.name for p in parts])
        raise
    done = Resharded(rows={s: index.num_rows(s) for s in index.present()},
                     row_groups=sum(d.row_groups for d in finished.values()),
                     files=[p.name for p in parts])
    return done, [finished[i].stats for i in sorted(finished)]


@contextlib.contextmanager
def _by_value(modules: tuple[str, ...]) -> Iterator[None]:
    """Functions and classes of ``modules`` pickled by value, not by name, meanwhile."""
    added = [sys.modules[m] for m in modules
             if m in sys.modules and m not in ray.cloudpickle.list_registry_pickle_by_value()]
    for module in added:
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in added:
            ray.cloudpickle.unregister_pickle_by_value(module)


def _result(ref: ray.ObjectRef) -> PartDone:
    """A task's outcome; its own error (a UserError of the encoder, a DataError of a file)
    as it was raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        missing = re.search(r"No module named '([^']+)'", str(cause))
        if isinstance(cause, ray.exceptions.RaySystemError) and missing:
            raise UserError(  # what it was sent names an installed module the node lacks
                f"a task on the cluster could not load the rewrite it was sent: no module "
                f"named {missing[1]!r} on its node; an installed package must be installed on "
                f"every node (your own code, not installed, is sent with the tasks)") from None
        raise (cause if isinstance(cause, Exception) else err) from None


def _stop(refs: list[ray.ObjectRef]) -> None:
    """Cancel the tasks of ``refs``, ending their worker processes."""
    for ref in refs:
        ray.cancel(ref, force=True)


def _cancel(refs: list[ray.ObjectRef]) -> None:
    """Stop the tasks of ``refs`` and wait for them (up to CANCEL_WAIT_S), so that none
    writes after its files are removed."""
    _stop(refs)
    deadline, left = time.monotonic() + CANCEL_WAIT_S, list(refs)
    while left and time.monotonic() < deadline:
        _, left = ray.wait(left, num_returns=len(left), timeout=1.0)
    for ref in refs:  # their outcomes taken, so that Ray does not log them as unhandled
        if ref not in left:
            with contextlib.suppress(Exception):
                ray.get(ref, timeout=0)


def _remove_on(nodes: list[str], out: str, names: list[str]) -> None:
    """Remove ``names`` from ``out`` on each of ``nodes`` (best effort, briefly)."""
    refs = [_remove.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, False))
            .remote(out, names) for node in nodes]
    ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)


def rewrite_joined(cfg: Config, index: DataIndex, out: str, job: ClusterRewrite,
                   progress: bool | None = None, desc: str = "rewrite"
                   ) -> tuple[Resharded, list[object]]:
    """``rewrite_on_cluster`` on the cluster this process joined, else at runtime.address or
    RAY_ADDRESS."""
    connected = connect(cfg)
    try:
        return rewrite_on_cluster(index, out, cfg.data.shard_rows, job, progress, desc)
    finally:
        if connected:
            disconnect()
