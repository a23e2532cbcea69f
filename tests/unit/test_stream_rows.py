"""Which rows a block's stream hands out, read back from real Parquet row groups by an id
column: every row once an epoch, replicas' shares making up each batch, and a stream started
mid-run (a resume) giving the batches of one that never stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dbparallel.core.share import Share
from dbparallel.data.parquet_index import parquet_index
from dbparallel.data.shards import DataIndex
from dbparallel.training.data_order import DataOrder
from dbparallel.training.stream import BlockStream

SIZES = [5, 7, 3, 9, 1, 6, 4]  # 35 rows in row groups of unequal sizes


class RowIds:
    """A task whose rows are their ids (column ``id``), so a batch says which rows it holds."""

    columns = ["id"]

    def unpack(self, rows: pa.Table) -> dict[str, torch.Tensor]:
        return {"id": torch.from_numpy(rows.column("id").to_numpy().astype(np.int64))}

    def to_device(self, rows: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in rows.items()}


def _data(tmp_path: Path) -> DataIndex:
    n = sum(SIZES)
    table = pa.table({"image": pa.array([[0.0] * 4] * n, pa.list_(pa.float32())),
                      "label": pa.array(np.zeros(n, np.int64)), "id": pa.array(np.arange(n))})
    path = tmp_path / "d.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        for start, size in zip(np.cumsum([0] + SIZES[:-1]), SIZES, strict=True):
            writer.write_table(table.slice(int(start), size), row_group_size=size)
    return parquet_index(str(path))


def _ids(index: DataIndex, batch: int, window: int, steps: range, share: Share | None = None,
         prefetch: bool = True) -> list[list[int]]:
    order = DataOrder(SIZES, batch, seed=0, block=2, window_shards=window)
    stream = BlockStream(index, "train", order, RowIds(), "cpu", prefetch, share)  # type: ignore[arg-type]
    try:
        return [stream.batch(step)["id"].tolist() for step in steps]
    finally:
        stream.close()


@pytest.mark.parametrize("batch, window", [
    (4, 3),  # an epoch's last window has 1 shard
    (13, 2),  # batches straddle windows and epochs
    (40, 10),  # the data within one window, a batch longer than an epoch
])
def test_every_row_once_an_epoch_in_shares_and_after_a_resume(tmp_path, batch, window) -> None:
    index, n = _data(tmp_path), sum(SIZES)
    steps = range(2 * n // batch + 1)
    batches = _ids(index, batch, window, steps)
    rows = [r for b in batches for r in b]
    assert all(len(b) == batch for b in batches)
    assert sorted(rows[:n]) == sorted(rows[n:2 * n]) == list(range(n))
    assert rows[:n] != rows[n:2 * n]  # reshuffled each epoch
    assert _ids(index, batch, window, steps, prefetch=False) == batches
    for step in (1, len(steps) // 2):  # started where a checkpoint left off
        assert _ids(index, batch, window, steps[step:]) == batches[step:]
    shares = [_ids(index, batch, window, steps, Share.of(r, 3, batch)) for r in range(3)]
    assert [a + b + c for a, b, c in zip(*shares, strict=True)] == batches
