"""The validation pass spread over a Ray cluster: one task per unit of shards.

Each task reads and decodes its unit's rows on some node (``training/data_check.check_unit``),
so the pass takes the cluster's CPUs, not the driver's: the driver of ``ray job submit`` runs on
the head node, which may have few. The first bad row in index order is the one named, as on
the driver: once a unit fails, the units after it are cancelled and the ones before it are
waited for (one of them may hold an earlier bad row).
"""

from __future__ import annotations

from collections.abc import Iterator

import ray

from dbparallel.config import Config
from dbparallel.data.shards import DataIndex
from dbparallel.training.data_check import Unit, UnitRunner, check_unit


@ray.remote(max_retries=2)
def _check(cfg: Config, index: DataIndex, unit: Unit) -> int:
    return check_unit(cfg, index, unit)


def ray_units(cfg: Config, index: DataIndex) -> UnitRunner:
    """A runner for ``check_data`` that checks each unit in a Ray task of
    ``data.decode_threads`` CPUs (default 1, with one decode thread)."""
    threads = cfg.data.decode_threads or 1

    def run(units: list[Unit]) -> Iterator[int]:
        shared = ray.put(index)  # once, not once per task
        task = _check.options(num_cpus=threads, scheduling_strategy="SPREAD")
        refs = [task.remote(cfg, shared, unit) for unit in units]
        position = {ref: i for i, ref in enumerate(refs)}
        pending, failed = list(refs), None  # (unit position, error) of the lowest failure
        try:
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if isinstance(err.cause, Exception) else err
                    if failed is None or position[ref] < failed[0]:
                        failed = (position[ref], cause)
                    later = [r for r in pending if position[r] > failed[0]]
                    for r in later:
                        ray.cancel(r)
                    pending = [r for r in pending if position[r] < failed[0]]
                    continue
                yield rows
        finally:
            for r in pending:  # stopped early (an interrupt): leave no task running
                ray.cancel(r)
        if failed is not None:
            raise failed[1]

    return run
