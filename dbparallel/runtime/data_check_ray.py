"""The validation pass spread over a Ray cluster: one task per unit of shards.

Each task reads and decodes its unit's rows on some node (``training/data_check.check_unit``),
so the pass takes the cluster's CPUs, not the driver's: the driver of ``ray job submit`` runs
on the head node, which may have few. Data only this machine sees (built into its cache, or
named by a relative path), or a cluster with no CPU free, are checked in the driver instead,
as are data of no more than one unit's rows (``check_data`` decides: no task is started).
The bad rows named are those the driver would name, the first in index order: once the
units that failed hold as many bad rows as a check lists (or another error), the units after
them are cancelled and the ones before are waited for (they may hold earlier bad rows). A
cluster that runs none of the tasks (it filled up after the pass began, or its nodes are gone)
does not stall the pass: each task says when a worker begins its unit, and after
``PATIENCE_S`` seconds in which no task began or ended one, the driver checks the last unit no
worker has begun, and goes on so while the tasks stay silent. A unit a worker has begun is
left to it unless no task was heard of for ``LOST_S`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import ray
from ray import ObjectRefGenerator

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.training.data_check import (
    Checked,
    Unit,
    UnitRunner,
    check_unit,
    failures_needed,
    first_failure,
    readable_anywhere,
    with_threads,
)

PATIENCE_S = 30.0  # seconds with no unit begun or ended before the driver takes a waiting one
LOST_S = 600.0  # seconds with no task heard of before the driver takes a unit a worker began
TASK_CPUS = 1.0  # CPUs of each check task
DRAIN_S = 10.0  # seconds spent at most collecting what dropped tasks still send
STARTED = -1  # what a task yields first: a worker has begun its unit


@ray.remote(num_returns="streaming", max_retries=2)
def _check(cfg: Config, index: DataIndex, unit: Unit) -> Iterator[int | Checked]:
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


def ray_units(cfg: Config, index: DataIndex, patience: float = PATIENCE_S,
              lost_after: float = LOST_S,
              clock: Callable[[], float] = time.monotonic) -> UnitRunner:
    """A runner for ``check_data`` that checks each unit in a Ray task of ``TASK_CPUS`` CPU,
    decoding on one thread. Each task says when a worker begins its unit. When no task has
    begun or finished a unit for ``patience`` seconds and some unit waits for a worker (the
    cluster filled up after the pass began, or its nodes are gone), the driver checks the last
    waiting unit itself, and goes on so while the tasks stay silent: the pass never waits on a
    cluster that runs none of it. A unit a worker has begun is left to it, unless no task has
    been heard of for ``lost_after`` seconds (a lost node whose retry cannot be placed): then
    the driver checks that unit too, and drops the task once it is done. ``clock`` tells
    those seconds."""
    one = with_threads(cfg, 1)

    def run(units: list[Unit]) -> Iterator[Checked]:
        shared = ray.put(index)  # once, not once per task
        task = _check.options(num_cpus=TASK_CPUS, scheduling_strategy="SPREAD")
        left = [task.remote(one, shared, unit) for unit in units]  # streaming, one per unit
        unit_of = {id(g): i for i, g in enumerate(left)}
        started: set[int] = set()
        dropped: list[ObjectRefGenerator] = []
        failures: dict[int, Exception] = {}  # unit -> its error
        heard = clock()  # when a task last began or ended a unit
        told = False  # the driver said it checks units

        def fail(at: int, err: Exception) -> None:
            nonlocal left
            failures[at] = err
            left = [g for g in left if unit_of[id(g)] != at]
            last = failures_needed(failures)
            if last is None:  # every unit left may still hold an earlier bad row
                return
            later = [g for g in left if unit_of[id(g)] > last]
            left = [g for g in left if unit_of[id(g)] < last]
            for g in later:
                ray.cancel(g)
            dropped.extend(later)

        try:
            while left:
                waiting = [g for g in left if unit_of[id(g)] not in started]
                quiet = clock() - heard
                timeout = max(0.0, (patience if waiting else lost_after) - quiet)
                ready, _ = ray.wait(left, num_returns=1, timeout=timeout)
                if ready:
                    (gen,) = ready
                    at, heard = unit_of[id(gen)], clock()
                    try:
                        out = ray.get(next(gen))
                    except ray.exceptions.RayError as err:  # bad data, or a worker lost
                        cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) \
                            and isinstance(err.cause, Exception) else err
                        fail(at, cause)
                        continue
                    if out == STARTED:
                        started.add(at)
                        continue
                    left.remove(gen)
                    yield out
                    continue
                if not waiting and clock() - heard < lost_after:
                    continue  # units are running: wait for them
                gen = max(waiting or left, key=lambda g: unit_of[id(g)])
                if not told:
                    told = True
                    why = (f"no unit of the check began or ended in {patience:g} s (is the "
                           f"cluster full?)" if waiting else
                           f"no task was heard of in {lost_after:g} s (a node lost?)")
                    print(f"data: {why}; the driver checks units while the tasks are silent",
                          flush=True)
                left.remove(gen)
                if waiting:
                    ray.cancel(gen)  # not begun: nothing of it is lost
                dropped.append(gen)
                try:
                    checked = check_unit(one, index, units[unit_of[id(gen)]])
                except Exception as err:  # noqa: BLE001 (ordered as a task's failure)
                    fail(unit_of[id(gen)], err)
                    continue
                finally:  # begun: its worker stopped once the driver has the unit's outcome
                    ray.cancel(gen, force=not waiting)
                yield checked
        finally:
            for g in left:  # stopped early (an interrupt): leave no task running
                ray.cancel(g)
            _drain(dropped + left)
        failure = first_failure(failures)
        if failure is not None:
            raise failure

    return run


def _drain(gens: list[ObjectRefGenerator], budget: float = DRAIN_S) -> None:
    """Fetch what cancelled or unneeded tasks still yield, so that Ray does not log their
    errors as unhandled; within ``budget`` seconds in all (a task on a lost node may never
    answer)."""
    deadline = time.monotonic() + budget
    for gen in gens:
        while time.monotonic() < deadline and not gen.is_finished():
            if not gen.next_ready():
                time.sleep(0.05)
                continue
            try:
                ray.get(next(gen))
            except StopIteration:
                break
            except Exception:  # noqa: BLE001 (cancelled or failed: the outcome is not used)
                pass
