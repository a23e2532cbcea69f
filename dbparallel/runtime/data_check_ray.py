"""The validation pass spread over a Ray cluster: one task per unit of shards.

Each task reads and decodes its unit's rows on some node (``training/data_check.check_unit``),
so the pass takes the cluster's CPUs, not the driver's: the driver of ``ray job submit`` runs
on the head node, which may have few. Data only this machine sees (built into its cache, or
named by a relative path), or a cluster with no CPU free, are checked in the driver instead.
The first bad row in index order is the one named, as on the driver: once a unit fails, the
units after it are cancelled and the ones before it are waited for (one of them may hold an
earlier bad row). A cluster that stops running the tasks (full, or its nodes gone) does not
stall the pass: after ``PATIENCE_S`` seconds with none finished, the driver checks the units
too, from the last.
"""

from __future__ import annotations

from collections.abc import Iterator

import ray

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.training.data_check import (
    Unit,
    UnitRunner,
    check_unit,
    readable_anywhere,
    with_threads,
)

PATIENCE_S = 30.0  # seconds with no task finished before the driver checks units itself


@ray.remote(max_retries=2)
def _check(cfg: Config, index: DataIndex, unit: Unit) -> int:
    return check_unit(cfg, index, unit)


def cluster_units(cfg: Config, index: DataIndex) -> UnitRunner | None:
    """``ray_units`` where the cluster can do the pass: the data are readable from every node
    (``readable_anywhere``) and a CPU is free now; else None (checked in the driver)."""
    if not readable_anywhere(index):
        return None  # the built-in sets in this machine's cache, or a relative data.path
    if ray.available_resources().get("CPU", 0) < 1:
        print("data: no CPU of the cluster is free; the rows are checked here, in the driver",
              flush=True)
        return None
    return ray_units(cfg, index)


def ray_units(cfg: Config, index: DataIndex, patience: float = PATIENCE_S) -> UnitRunner:
    """A runner for ``check_data`` that checks each unit in a Ray task of one CPU, decoding on
    one thread. When no task has finished for ``patience`` seconds (the cluster filled up
    after the pass began, or its nodes are gone), the driver checks units too, from the last
    one not yet checked: the pass never waits on a cluster that does not run it."""
    one = with_threads(cfg, 1)

    def run(units: list[Unit]) -> Iterator[int]:
        shared = ray.put(index)  # once, not once per task
        task = _check.options(num_cpus=1, scheduling_strategy="SPREAD")
        refs = [task.remote(one, shared, unit) for unit in units]
        position = {ref: i for i, ref in enumerate(refs)}
        pending, dropped = list(refs), []
        failed: tuple[int, Exception] | None = None  # the lowest failed unit and its error
        helping = False  # the driver checks units too

        def fail(at: int, err: Exception) -> None:
            nonlocal failed, pending
            if failed is None or at < failed[0]:
                failed = (at, err)
            dropped.extend(r for r in pending if position[r] > failed[0])
            pending = [r for r in pending if position[r] < failed[0]]
            for r in dropped:
                ray.cancel(r)

        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1,
                                          timeout=0 if helping else patience)
                if not ready:  # nothing finished in time: the driver takes the last unit
                    if not helping:
                        print(f"data: no check task finished in {patience:g} s (is the "
                              f"cluster full?); the driver checks units too", flush=True)
                    helping = True
                    ref = max(pending, key=position.__getitem__)  # its task likely waits
                    pending.remove(ref)
                    ray.cancel(ref)
                    dropped.append(ref)
                    try:
                        rows = check_unit(one, index, units[position[ref]])
                    except Exception as err:  # noqa: BLE001 (ordered as a task's failure)
                        fail(position[ref], err)
                        continue
                    yield rows
                    continue
                (ref,) = ready
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayError as err:  # bad data, or a worker lost for good
                    cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) and \
                        isinstance(err.cause, Exception) else err
                    fail(position[ref], cause)
                    continue
                yield rows
        finally:
            for r in pending:  # stopped early (an interrupt): leave no task running
                ray.cancel(r)
            _drain(dropped + pending)
        if failed is not None:
            raise failed[1]

    return run


def _drain(refs: list[ray.ObjectRef]) -> None:
    """Fetch the outcome of cancelled or unneeded tasks, so that Ray does not log their errors
    as unhandled."""
    for ref in refs:
        try:
            ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 (cancelled, failed or slow: the outcome is not used)
            pass
