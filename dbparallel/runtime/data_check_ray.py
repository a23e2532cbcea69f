"""The validation pass spread over a Ray cluster: one task per unit of shards.

Each task reads and decodes its unit's rows on some node (``training/data_check.check_unit``),
so the pass takes the cluster's CPUs, not the driver's: the driver of ``ray job submit`` runs
on the head node, which may have few. Data only this machine sees (built into its cache, or
named by a relative path), or a cluster with no CPU free, are checked in the driver instead.
The first bad row in index order is the one named, as on the driver: once a unit fails, the
units after it are cancelled and the ones before it are waited for (one of them may hold an
earlier bad row). A cluster that runs none of the tasks (it filled up after the pass began,
or its nodes are gone) does not stall the pass: each task says when a worker begins its unit,
and after ``PATIENCE_S`` seconds with no unit running and some waiting, the driver checks
those itself, from the last, until a task begins. A unit a worker has begun is never taken.
"""

from __future__ import annotations

from collections.abc import Iterator

import ray
from ray import ObjectRefGenerator

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.training.data_check import (
    Unit,
    UnitRunner,
    check_unit,
    readable_anywhere,
    with_threads,
)

PATIENCE_S = 30.0  # seconds with no unit begun or finished before the driver takes one
STARTED = -1  # what a task yields first: a worker has begun its unit


@ray.remote(num_returns="streaming", max_retries=2)
def _check(cfg: Config, index: DataIndex, unit: Unit) -> Iterator[int]:
    yield STARTED
    yield check_unit(cfg, index, unit)


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
    one thread. Each task says when a worker begins its unit. When for ``patience`` seconds no
    unit has been running and some wait (the cluster filled up after the pass began, or its
    nodes are gone), the driver checks those itself, from the last, until a task begins: the
    pass never waits on a cluster that runs none of it, and never redoes a unit a worker has
    begun."""
    one = with_threads(cfg, 1)

    def run(units: list[Unit]) -> Iterator[int]:
        shared = ray.put(index)  # once, not once per task
        task = _check.options(num_cpus=1, scheduling_strategy="SPREAD")
        left = [task.remote(one, shared, unit) for unit in units]  # streaming, one per unit
        unit_of = {id(g): i for i, g in enumerate(left)}
        started: set[int] = set()
        dropped: list[ObjectRefGenerator] = []
        failed: tuple[int, Exception] | None = None  # the lowest failed unit and its error
        helping = told = False  # the driver is taking units; it said so

        def fail(at: int, err: Exception) -> None:
            nonlocal failed, left
            if failed is None or at < failed[0]:
                failed = (at, err)
            later = [g for g in left if unit_of[id(g)] > failed[0]]
            left = [g for g in left if unit_of[id(g)] < failed[0]]
            for g in later:
                ray.cancel(g)
            dropped.extend(later)

        try:
            while left:
                ready, _ = ray.wait(left, num_returns=1, timeout=0 if helping else patience)
                if ready:
                    (gen,) = ready
                    at = unit_of[id(gen)]
                    try:
                        rows = ray.get(next(gen))
                    except ray.exceptions.RayError as err:  # bad data, or a worker lost
                        cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) \
                            and isinstance(err.cause, Exception) else err
                        fail(at, cause)
                        continue
                    if rows == STARTED:
                        started.add(at)
                        continue
                    left.remove(gen)
                    yield rows
                    continue
                waiting = [g for g in left if unit_of[id(g)] not in started]
                helping = len(waiting) == len(left) > 0  # none running, some waiting
                if not helping:
                    continue  # units are running: wait for them
                gen = max(waiting, key=lambda g: unit_of[id(g)])
                if not told:
                    told = True
                    print(f"data: no unit of the check began in {patience:g} s (is the cluster "
                          f"full?); the driver checks units until a task begins", flush=True)
                left.remove(gen)
                ray.cancel(gen)
                dropped.append(gen)
                try:
                    rows = check_unit(one, index, units[unit_of[id(gen)]])
                except Exception as err:  # noqa: BLE001 (ordered as a task's failure)
                    fail(unit_of[id(gen)], err)
                    continue
                yield rows
        finally:
            for g in left:  # stopped early (an interrupt): leave no task running
                ray.cancel(g)
            _drain(dropped + left)
        if failed is not None:
            raise failed[1]

    return run


def _drain(gens: list[ObjectRefGenerator]) -> None:
    """Fetch what cancelled or unneeded tasks still yield, so that Ray does not log their
    errors as unhandled; at most 30 s for each."""
    for gen in gens:
        try:
            while ray.wait([gen], timeout=30)[0]:
                ray.get(next(gen), timeout=30)
        except Exception:  # noqa: BLE001 (cancelled, failed, done or slow: not used)
            pass
