"""The one Ray Dataset that every block reads in full.

It is materialized in the object store before any actor takes the CPUs (lazy Ray Data work
hangs when actors hold every CPU), and the same Dataset object is handed to every actor:
no ``split``/``streaming_split``, which would shard it. Each actor reads all of it once and
visits it in its own order (training/data_order.py).
"""

from __future__ import annotations

import pyarrow as pa
import ray


def shared_dataset(table: pa.Table) -> ray.data.Dataset:
    """A materialized Dataset of ``table``, in ``table``'s row order."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray.data.from_arrow(table).materialize()


def read_all(dataset: ray.data.Dataset) -> pa.Table:
    """Every row of ``dataset``, in order, as one Arrow table."""
    refs = dataset.to_arrow_refs()
    return pa.concat_tables(ray.get(refs))
