"""One block's stream of batches over the shared data set, a window of shards at a time.

The stream holds the window its next batch lies in and reads the following one in a
background thread while the block trains, so memory is two windows and a batch whatever the
number of rows. Rows are decoded per batch by the task, on the block's own device. A bad row
stops the block with a DataError naming its file and row.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from dbparallel.core.share import Share
from dbparallel.data.shard_reader import ShardRows, read_shard
from dbparallel.data.shards import DataIndex
from dbparallel.errors import RowError
from dbparallel.tasks.base import Batch
from dbparallel.training.data_order import DataOrder, Segment

Decode = Callable[[pa.Table, "str | torch.device"], Batch]


@dataclass(frozen=True)
class Window:
    """The rows of a window's shards, concatenated in window order."""

    ids: list[int]  # the shards, in window order
    parts: list[ShardRows]
    starts: list[int]  # first window row of each part
    table: pa.Table

    @classmethod
    def read(cls, index: DataIndex, split: str, shard_ids: list[int],
             columns: list[str] | None, held: Window | None = None) -> Window:
        """The window of ``shard_ids``; shards that ``held`` (a window in memory) has are
        taken from it, not read again: a data set within one window is read once, not once
        per epoch (reading and decoding Parquet costs more than a training step)."""
        shards = index.shards(split)
        kept = held.shard_rows() if held is not None else {}
        parts = [kept[s] if s in kept else read_shard(shards[s], columns, index.meta)
                 for s in shard_ids]
        starts = np.cumsum([0] + [p.table.num_rows for p in parts[:-1]]).tolist()
        # one contiguous chunk: taking a batch's rows from a chunked column would copy the
        # whole window on every batch; the parts keep only where their rows came from
        table = pa.concat_tables([p.table for p in parts]).combine_chunks()
        located = [ShardRows(p.shard, p.table.slice(0, 0), p.file_rows) for p in parts]
        return cls(list(shard_ids), located, starts, table)

    def shard_rows(self) -> dict[int, ShardRows]:
        """Each shard's rows: zero-copy slices of this window's table."""
        return {s: ShardRows(p.shard, self.table.slice(start, len(p.file_rows)), p.file_rows)
                for s, p, start in zip(self.ids, self.parts, self.starts, strict=True)}

    def where(self, row: int) -> str:
        k = bisect.bisect_right(self.starts, row) - 1
        return self.parts[k].where(row - self.starts[k])


class BlockStream:
    """``batch(step)``: the decoded batch of ``step`` in this block's data order."""

    def __init__(self, index: DataIndex, split: str, order: DataOrder, decode: Decode,
                 device: str | torch.device = "cpu", columns: list[str] | None = None,
                 prefetch: bool = True, share: Share | None = None):
        self.index, self.split, self.order, self.share = index, split, order, share
        # The windows are read into the system allocator's memory, not Arrow's default
        # (mimalloc): benchmarks/data_scale.py's 16x run peaked at 2,296 MiB with it against
        # 2,997 MiB before; by hand, one block in one process on that benchmark's 1x data
        # trained 2,020-2,214 samples/s with it against 1,566-1,779 with mimalloc.
        pa.set_memory_pool(pa.system_memory_pool())
        self.decode, self.device, self.columns = decode, device, columns
        self._windows: dict[tuple[int, int], Future[Window]] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if prefetch else None

    def batch(self, step: int) -> Batch:
        """The decoded batch of ``step``, or this stream's share of its rows."""
        segments = self.order.segments(step)
        taken, located = [], []
        for seg in _cut(segments, self.share):
            window = self._window(seg.epoch, seg.window)
            taken.append(window.table.take(pa.array(seg.rows)))
            located += [(window, int(r)) for r in seg.rows]
        last = segments[-1]
        self._forget_before(last.epoch, last.window)
        self._prefetch(*self.order.next_window(last.epoch, last.window))
        try:
            return self.decode(pa.concat_tables(taken), self.device)
        except RowError as err:
            window, row = located[err.row]
            raise err.at(window.where(row)) from None

    def _load(self, epoch: int, window: int) -> Future[Window]:
        key = (epoch, window)
        if key not in self._windows:
            shard_ids = self.order.shards_of(epoch, window)
            held = next((f.result() for k, f in sorted(self._windows.items(), reverse=True)
                         if f.done() and f.exception() is None), None)
            args = (self.index, self.split, shard_ids, self.columns, held)
            if self._pool is None:
                done: Future[Window] = Future()
                done.set_result(Window.read(*args))
                self._windows[key] = done
            else:
                self._windows[key] = self._pool.submit(Window.read, *args)
        return self._windows[key]

    def _window(self, epoch: int, window: int) -> Window:
        return self._load(epoch, window).result()

    def _prefetch(self, epoch: int, window: int) -> None:
        if self._pool is not None:
            self._load(epoch, window)

    def _forget_before(self, epoch: int, window: int) -> None:
        for key in [k for k in self._windows if k < (epoch, window)]:
            del self._windows[key]

    def close(self) -> None:
        """Stop the prefetch thread and drop the windows."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._windows.clear()


def _cut(segments: list[Segment], share: Share | None) -> list[Segment]:
    """The parts of a batch's segments that hold ``share``'s rows (all of them: None)."""
    if share is None or share.is_whole:
        return segments
    out, position = [], 0
    for seg in segments:
        lo, hi = max(share.start - position, 0), min(share.stop - position, len(seg.rows))
        if lo < hi:
            out.append(Segment(seg.epoch, seg.window, seg.rows[lo:hi]))
        position += len(seg.rows)
    return out
