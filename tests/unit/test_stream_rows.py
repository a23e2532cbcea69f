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
from dbparallel.data.split_reader import iter_split
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


def _data(tmp_path: Path, split: list[str] | None = None) -> DataIndex:
    """SIZES rows in row groups of those sizes, each row's id its row number (and its
    ``split``, when given)."""
    n = sum(SIZES)
    table = pa.table({"image": pa.array([[0.0] * 4] * n, pa.list_(pa.float32())),
                      "label": pa.array(np.zeros(n, np.int64)), "id": pa.array(np.arange(n))})
    if split is not None:
        table = table.append_column("split", pa.array(split))
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
    (7, 3),  # 5 batches an epoch: a resume at step 5 starts right at the epoch's end
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
    # started where a checkpoint left off (n // batch: at or just before an epoch's end)
    for step in sorted({1, len(steps) // 2, max(1, n // batch)}):
        assert _ids(index, batch, window, steps[step:]) == batches[step:]
    shares = [_ids(index, batch, window, steps, Share.of(r, 3, batch)) for r in range(3)]
    assert [a + b + c for a, b, c in zip(*shares, strict=True)] == batches


def test_a_split_column_keeps_held_out_rows_out_of_the_training_stream(tmp_path) -> None:
    """Row groups that hold rows of several splits: the stream reads only the training rows,
    each once an epoch, and the held-out rows are exactly the others."""
    n = sum(SIZES)
    split = [("train", "test", "val", "train", "train")[i % 5] for i in range(n)]
    index = _data(tmp_path, split)
    train = [i for i in range(n) if split[i] == "train"]
    sizes = [s.rows for s in index.shards("train")]
    order = DataOrder(sizes, 6, seed=0, block=1, window_shards=2)
    stream = BlockStream(index, "train", order, RowIds(), "cpu")  # type: ignore[arg-type]
    try:
        rows = [r for step in range(2 * len(train) // 6) for r in stream.batch(step)["id"].tolist()]
    finally:
        stream.close()
    assert sorted(rows[:len(train)]) == sorted(rows[len(train):2 * len(train)]) == train
    for name, value in (("test", "test"), ("validation", "val")):
        held = [r for part in iter_split(index, name, ["id"])
                for r in part.table.column("id").to_pylist()]
        assert held == [i for i in range(n) if split[i] == value]


def test_a_replica_reads_ahead_the_windows_its_rows_lie_in_in_stream_order(
        tmp_path, monkeypatch) -> None:
    """Batches of 13 over windows of one row group span up to four windows, and a replica's
    share of a batch may end before the batch's last window: the window its next rows start
    in is read before any later one (one reading thread reads in the order asked), so the
    next step is not left waiting behind a window it needs after it."""
    index = _data(tmp_path)
    real, asked = BlockStream._load, []

    def load(self, epoch: int, window: int):
        if (epoch, window) not in self._windows:
            asked.append((epoch, window))
        return real(self, epoch, window)

    monkeypatch.setattr(BlockStream, "_load", load)
    for rank in range(3):
        asked.clear()
        order = DataOrder(SIZES, 13, seed=0, block=2, window_shards=1)
        stream = BlockStream(index, "train", order, RowIds(), "cpu",  # type: ignore[arg-type]
                             share=Share.of(rank, 3, 13))
        try:
            for step in range(8):  # 3 epochs
                stream.batch(step)
        finally:
            stream.close()
        assert asked == sorted(set(asked)), rank
