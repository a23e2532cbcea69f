"""The one Ray Dataset that every block reads in full.

It is materialized in the object store before any actor takes the CPUs (lazy Ray Data work
hangs when actors hold every CPU), and every actor reads the same materialized blocks: no
``split``/``streaming_split``, which would shard it. The driver hands out references to those
blocks, so an actor's read is a plain object-store fetch that needs no free CPU, also when a
restarted actor reads it again mid-run. Each actor visits the rows in its own order
(training/data_order.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import ray


@dataclass(frozen=True)
class SharedDataset:
    """A materialized Dataset and the object references of its Arrow blocks, in row order."""

    dataset: ray.data.Dataset
    blocks: list[ray.ObjectRef]

    @property
    def num_rows(self) -> int:
        return self.dataset.count()


def shared_dataset(table: pa.Table) -> SharedDataset:
    """Materialize ``table`` once in the object store, in ``table``'s row order."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_arrow(table).materialize()
    return SharedDataset(dataset, dataset.to_arrow_refs())


def read_all(shared: SharedDataset) -> pa.Table:
    """Every row of the shared dataset, in order, as one Arrow table."""
    return pa.concat_tables(ray.get(shared.blocks))
