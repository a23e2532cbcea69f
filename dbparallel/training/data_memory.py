"""How much memory a block's data stream holds, known before training starts.

A block holds the window its batches come from and the next one (training/stream.py), as
unpacked rows: 8-bit pixels, integer ids, encoded images at their decoded size. So its data
memory is at most two windows of its largest shards times the bytes of one unpacked row. A data
set within one window is held once (every epoch shares the rows, with an 8-byte index per row
and window). The row's size is measured by unpacking the first rows of the split, which reads
one shard (only a few files of an image folder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex, Shard
from dbparallel.errors import RowError
from dbparallel.tasks.base import Rows, Task

SAMPLE_ROWS = 16  # rows unpacked to measure one row's size
INDEX_BYTES = 8  # an int64 position per row of a window that shares a held window's rows


def rows_nbytes(rows: Rows) -> int:
    """Bytes of the tensors of ``rows``."""
    return sum(t.numel() * t.element_size() for t in rows.values())


@dataclass(frozen=True)
class DataFootprint:
    """One block's data memory at most: ``windows`` windows of ``window_rows`` rows."""

    row_bytes: int  # one unpacked row
    window_rows: int  # the most rows a window can hold: its largest shards together
    windows: int  # held at once: 2 (the current and the next), 1 when the data fit in one

    @property
    def bytes(self) -> int:
        shared = 2 * INDEX_BYTES * self.window_rows if self.windows == 1 else 0
        return self.windows * self.window_rows * self.row_bytes + shared


def data_footprint(index: DataIndex, task: Task, window_shards: int,
                   split: str = "train") -> DataFootprint:
    """The most memory a block streaming ``split`` of ``index`` holds in data rows."""
    shards = index.shards(split)
    largest = sorted((s.rows for s in shards), reverse=True)[:window_shards]
    windows = 1 if len(shards) <= window_shards else 2
    return DataFootprint(row_bytes(index, task, split), sum(largest), windows)


def row_bytes(index: DataIndex, task: Task, split: str = "train") -> int:
    """Bytes of one unpacked row, measured on the first rows of ``split`` that unpack (a bad
    row is reported where training or the validation pass meets it; DataError here only if
    every row measured is bad)."""
    shard = next(s for s in index.shards(split) if s.rows)
    read = read_shard(_head(shard, SAMPLE_ROWS), task.columns, index.meta)
    start, n, first = 0, min(SAMPLE_ROWS, read.table.num_rows), None
    while start < n:
        try:
            rows = task.unpack(read.table.slice(start, n - start))
        except RowError as err:
            first = first or err.at(read.where(start + err.row))
            start += err.row + 1
            continue
        return -(-rows_nbytes(rows) // (n - start))  # every unpacked row has one size
    assert first is not None
    raise first


def _head(shard: Shard, n: int) -> Shard:
    """The first ``n`` rows of ``shard`` where they can be read alone (image files, token
    rows); a Parquet row group is read whole."""
    if shard.kind == "files":
        return dataclasses.replace(shard, rows=min(n, shard.rows), files=shard.files[:n],
                                   labels=shard.labels[:n])
    if shard.kind == "tokens":
        return dataclasses.replace(shard, rows=min(n, shard.rows))
    return shard


def footprint_line(footprint: DataFootprint) -> str:
    """What a block holds, in one line."""
    f = footprint
    held = ("one window (the data fit in it)" if f.windows == 1
            else "two windows (the current and the next)")
    return (f"data: a block holds {held} of at most {f.window_rows:,} rows x "
            f"{_size(f.row_bytes)} unpacked = {_size(f.bytes)}")


def footprint_warning(footprint: DataFootprint, blocks: int, memory: int) -> str | None:
    """A warning when ``blocks`` blocks' data would take over half of ``memory`` bytes."""
    total = blocks * footprint.bytes
    if total <= memory // 2:
        return None
    return (f"data: {blocks} blocks x {_size(footprint.bytes)} of data rows = {_size(total)}, "
            f"over half of this machine's {_size(memory)}; lower data.window_shards, or "
            f"write the data in smaller shards (data.shard_rows; Parquet row groups)")


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
