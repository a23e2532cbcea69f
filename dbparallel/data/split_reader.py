"""Reading a split: its shards' rows in index order, the rows at given positions, or chunks
of a fixed number of rows whatever the shard sizes.

Built on reading one shard (data/shard_reader.py): evaluation, validation and the data check
read a split here; each row keeps where it came from, so a bad row is reported exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dbparallel.data.shard_reader import ShardRows, read_pieces, read_shard
from dbparallel.data.shards import DataIndex


def iter_split(index: DataIndex, split: str,
               columns: list[str] | None = None) -> Iterator[ShardRows]:
    """The rows of ``split`` in index order, a piece of a shard at a time (evaluation,
    validation)."""
    for shard in index.shards(split):
        yield from read_pieces(shard, columns, index.meta)


def take_rows(index: DataIndex, split: str, positions: np.ndarray,
              columns: list[str] | None = None) -> pa.Table:
    """The rows at ``positions`` (0-based over ``split`` in index order), in that order;
    reads only the shards that hold them."""
    shards = index.shards(split)
    starts = np.cumsum([0] + [s.rows for s in shards])
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) and (positions.min() < 0 or positions.max() >= starts[-1]):
        raise IndexError(f"row positions outside [0, {starts[-1]}) of split {split!r}")
    owner = np.searchsorted(starts, positions, side="right") - 1
    parts, order = [], []
    for s in np.unique(owner):
        mine = np.flatnonzero(owner == s)
        rows = read_shard(shards[s], columns, index.meta)
        parts.append(rows.table.take(pa.array(positions[mine] - starts[s])))
        order.append(mine)
    if not parts:
        return read_shard(shards[0], columns, index.meta).table.slice(0, 0)
    table = pa.concat_tables(parts)
    return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


@dataclass(frozen=True)
class Chunk:
    """Rows [offset, offset + table.num_rows) of a split, and where each came from."""

    offset: int
    table: pa.Table
    parts: list[tuple[int, ShardRows, int]]  # (first chunk row, shard rows, first shard row)

    def where(self, i: int) -> str:
        start, rows, first = max((p for p in self.parts if p[0] <= i), key=lambda p: p[0])
        return rows.where(first + i - start)


def iter_chunks(index: DataIndex, split: str, chunk: int,
                columns: list[str] | None = None, limit: int | None = None) -> Iterator[Chunk]:
    """The rows of ``split`` in index order (the first ``limit`` of them if given), in chunks
    of ``chunk`` rows (the last may be shorter) whatever the shard sizes; holds one chunk and
    a piece of a shard at a time."""
    pending: list[tuple[ShardRows, int, int]] = []  # (shard rows, start, stop)
    filled, offset = 0, 0
    left = index.num_rows(split) if limit is None else limit

    def emit() -> Chunk:
        parts, tables, at = [], [], 0
        for rows, start, stop in pending:
            parts.append((at, rows, start))
            tables.append(rows.table.slice(start, stop - start))
            at += stop - start
        return Chunk(offset, pa.concat_tables(tables), parts)

    for rows in iter_split(index, split, columns):
        start = 0
        while start < rows.table.num_rows and left:
            take = min(chunk - filled, rows.table.num_rows - start, left)
            pending.append((rows, start, start + take))
            filled, start, left = filled + take, start + take, left - take
            if filled == chunk:
                yield emit()
                offset, filled, pending = offset + chunk, 0, []
        if not left:
            break
    if pending:
        yield emit()
