"""One block's stream of batches over the shared data set, a window of shards at a time.

The stream holds the window its next batch lies in and reads the following one in a
background thread while the block trains, so memory is two windows, two batches of rows (this
step's, until copied to the device, and the next step's; pinned on CUDA, whose allocator
rounds them up to a power of two and keeps a few until their copies end) and, while a
window is read, a few MiB of a shard's rows (a window is one allocation, filled piece by piece),
whatever the number of rows (training/data_memory.py says how much before training starts;
``peak_bytes`` measures it; ``data.read_threads`` threads read a window's shards at once, each
with a shard's rows in flight). Reading a window also unpacks it (the task checks every row and
holds it compactly on the CPU: 8-bit pixels, integer ids; encoded images are decoded there),
so a batch is only a gather of rows and a copy to the block's device, where pixels become
floats. The gather of the next step's rows is done ahead, in a second background thread, while
the block trains on this step's; for a CUDA device it gathers into pinned (page-locked) memory,
so the copy to the device is asynchronous and the training thread spends no time on the batch.
A bad row stops the block with a DataError naming its file and row, when the window that
holds it is first needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from dbparallel.core.share import Share
from dbparallel.data.shard_reader import ShardRows, joined, read_pieces
from dbparallel.data.shards import DataIndex, Shard
from dbparallel.errors import RowError
from dbparallel.tasks.base import Batch, Rows, Task, rows_of
from dbparallel.training.data_memory import rows_nbytes
from dbparallel.training.data_order import DataOrder, Segment

# Arrow bytes of a shard's rows unpacked at once: a 256x256 JPEG of 37 KiB gives 450 rows, enough
# for 28 decode threads (each takes at least MIN_ROWS_PER_THREAD = 16 rows)
UNPACK_BYTES = 16 << 20


@dataclass(frozen=True)
class Window:
    """The unpacked rows of a window's shards, in window order (its shards' rows one after
    another): window row r is ``rows[index[r]]`` (``rows[r]`` when ``index`` is None)."""

    ids: list[int]  # the shards, in window order
    starts: list[int]  # first window row of each shard, and the window's length last
    rows: Rows
    index: np.ndarray | None = None

    @classmethod
    def read(cls, index: DataIndex, split: str, shard_ids: list[int], task: Task,
             held: Window | None = None, readers: int = 1) -> Window:
        """The window of ``shard_ids``, unpacked by ``task``, its shards read by ``readers``
        threads at once. Shards that ``held`` (a window in memory) has are taken from it, not
        read again; a window of the same shards as ``held`` shares its rows, so a data set
        within one window is read, unpacked and copied once, not once per epoch (reading,
        checking and decoding rows costs more than a training step). Of shards that fail, the
        first in window order raises."""
        shards = index.shards(split)
        kept = held.positions() if held is not None else {}
        sizes = [len(kept[s]) if s in kept else shards[s].rows for s in shard_ids]
        starts = np.cumsum([0] + sizes).tolist()
        if held is not None and all(s in kept for s in shard_ids):
            at = np.concatenate([kept[s] for s in shard_ids])
            # held's rows in their own order (a window of one shard again, across an epoch's
            # end) need no index, which training/data_memory.py counts only where a window
            # of several shards may come again in another order
            same = len(at) == rows_of(held.rows) and np.array_equal(at, np.arange(len(at)))
            return cls(list(shard_ids), starts, held.rows, None if same else at)
        rows: Rows = {}  # one allocation, filled piece by piece: never a window twice
        first = threading.Lock()  # the first piece to come, from any shard, allocates it

        def fill(s: int, a: int, b: int) -> None:
            parts = [_select(held.rows, kept[s])] if held is not None and s in kept \
                else _unpacked(shards[s], task, index.meta)
            at = a
            for part in parts:
                with first:
                    if not rows:
                        rows.update({k: v.new_empty((starts[-1], *v.shape[1:]))
                                     for k, v in part.items()})
                n = rows_of(part)
                for k, v in part.items():
                    if v.shape[1:] != rows[k].shape[1:] or v.dtype != rows[k].dtype or \
                            at + n > b:
                        raise AssertionError(f"shard {s}: {k} unpacked as {v.dtype} "
                                             f"{tuple(v.shape)} at row {at - a} of {b - a}, "
                                             f"unlike the window's first rows")
                    rows[k][at:at + n] = v  # shards fill rows apart: no lock needed
                at += n
            if at != b:
                raise AssertionError(f"shard {s}: {at - a} rows unpacked, {b - a} expected")

        jobs = list(zip(shard_ids, starts[:-1], starts[1:], strict=True))
        if readers <= 1 or len(jobs) == 1:
            for job in jobs:
                fill(*job)
        else:
            pool = ThreadPoolExecutor(min(readers, len(jobs)), thread_name_prefix="read")
            try:
                for done in [pool.submit(fill, *job) for job in jobs]:
                    done.result()
            finally:  # a failure: the shards not yet started are not read
                pool.shutdown(wait=True, cancel_futures=True)
        return cls(list(shard_ids), starts, rows)

    def take(self, rows: np.ndarray, out: Rows | None = None) -> Rows:
        """The window's ``rows``, in that order (a copy: each row's bytes in one piece), into
        ``out`` (tensors of as many rows) when given."""
        return _select(self.rows, rows if self.index is None else self.index[rows], out)

    def positions(self) -> dict[int, np.ndarray]:
        """Where each shard's rows lie in ``rows``."""
        window = np.arange(self.starts[-1]) if self.index is None else self.index
        return {s: window[a:b]
                for s, a, b in zip(self.ids, self.starts[:-1], self.starts[1:], strict=True)}


def _select(rows: Rows, positions: np.ndarray, out: Rows | None = None) -> Rows:
    index = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.int64))
    if out is None:
        return {k: v.index_select(0, index) for k, v in rows.items()}
    for k, v in rows.items():
        torch.index_select(v, 0, index, out=out[k])
    return out


def _unpacked(shard: Shard, task: Task, meta: dict) -> Iterator[Rows]:
    """``shard``'s rows unpacked by ``task``, pieces (data/shard_reader.py) of at least
    ``UNPACK_BYTES`` together: enough rows for every thread that decodes encoded images."""
    group: list[ShardRows] = []
    for piece in read_pieces(shard, task.columns, meta):
        group.append(piece)
        if sum(p.table.nbytes for p in group) >= UNPACK_BYTES:
            yield _unpack(task, joined(group))
            group = []
    if group:
        yield _unpack(task, joined(group))


def _unpack(task: Task, read: ShardRows) -> Rows:
    try:
        return task.unpack(read.table)
    except RowError as err:
        raise err.at(read.where(err.row)) from None


def _gather(parts: list[tuple[Future[Window], np.ndarray]], pinned: bool) -> Rows:
    """The rows of ``parts`` (a window and the positions of its rows, each) one after another,
    in one allocation per column: pinned (page-locked) memory when ``pinned``."""
    windows = [(future.result(), rows) for future, rows in parts]
    n = sum(len(rows) for _, rows in windows)
    out = {k: torch.empty((n, *v.shape[1:]), dtype=v.dtype, pin_memory=pinned)
           for k, v in windows[0][0].rows.items()}
    at = 0
    for window, rows in windows:
        window.take(rows, {k: v[at:at + len(rows)] for k, v in out.items()})
        at += len(rows)
    return out


class BlockStream:
    """``batch(step)``: the batch of ``step`` in this block's data order, on its device."""

    def __init__(self, index: DataIndex, split: str, order: DataOrder, task: Task,
                 device: str | torch.device = "cpu", prefetch: bool = True,
                 share: Share | None = None, readers: int = 1):
        self.index, self.split, self.order, self.share = index, split, order, share
        self.readers = readers  # threads that read a window's shards at once
        # Parquet is read into the system allocator's memory, not Arrow's default
        # (mimalloc): benchmarks/data_scale.py's 16x run peaked at 2,296 MiB with it against
        # 2,997 MiB before; by hand, one block in one process on that benchmark's 1x data
        # trained 2,020-2,214 samples/s with it against 1,566-1,779 with mimalloc.
        pa.set_memory_pool(pa.system_memory_pool())
        self.task, self.device = task, device
        # page-locked rows copy to a CUDA device asynchronously (a CPU-only torch has none)
        self._pinned = torch.device(device).type == "cuda"
        self._windows: dict[tuple[int, int], Future[Window]] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if prefetch else None
        # the next step's rows, gathered while this step trains (its own thread: a gather
        # must not wait behind the read of a window it does not need)
        self._gatherer = ThreadPoolExecutor(1, thread_name_prefix="batch") if prefetch \
            else None
        self._ahead: tuple[int, Future[Rows]] | None = None
        self.peak_bytes = 0  # the most bytes of unpacked rows held (windows and batches),
        # as seen at each batch

    def batch(self, step: int) -> Batch:
        """The batch of ``step``, or this stream's share of its rows, on the stream's device;
        the next step's rows are then gathered ahead."""
        segments = self.order.segments(step)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == step:
            rows = ahead[1].result()
        else:  # the first step of this stream, or another than the one gathered ahead
            if ahead is not None:
                ahead[1].cancel()
            rows = _gather([(self._load(seg.epoch, seg.window), seg.rows)
                            for seg in _cut(segments, self.share)], self._pinned)
        held = self._held_bytes()
        last = segments[-1]
        self._forget_before(last.epoch, last.window)
        self._prefetch(step + 1, (last.epoch, last.window))
        batch = self.task.to_device(rows, self.device)
        size = rows_nbytes(rows)
        del rows, ahead  # this step's rows may go once copied; the next step's are gathered
        self._gather_ahead(step + 1)
        # the windows, this step's rows (until copied) and the next step's, if gathered ahead
        batches = 1 + (self._ahead is not None)  # set only for step + 1
        self.peak_bytes = max(self.peak_bytes, held + batches * size)
        return batch

    def _gather_ahead(self, step: int) -> None:
        """Gather ``step``'s rows in the background, if every window they lie in is held or
        being read (else when ``step`` comes: so the stream holds no more windows than
        training/data_memory.py counts)."""
        if self._gatherer is None:
            return
        segments = _cut(self.order.segments(step), self.share)
        if any((seg.epoch, seg.window) not in self._windows for seg in segments):
            return
        parts = [(self._windows[seg.epoch, seg.window], seg.rows) for seg in segments]
        self._ahead = (step, self._gatherer.submit(_gather, parts, self._pinned))

    def _load(self, epoch: int, window: int) -> Future[Window]:
        key = (epoch, window)
        if key in self._windows and _failed(self._windows[key]):
            # read again: a read that failed (storage out of reach) raised when its rows were
            # asked for, and the block asked again goes on once the storage answers
            del self._windows[key]
        if key not in self._windows:
            shard_ids = self.order.shards_of(epoch, window)
            # the newest window, read or still being read (one reading thread: before this)
            held = next((f for _, f in sorted(self._windows.items(), reverse=True)
                         if not _failed(f)), None)
            args = (self.index, self.split, shard_ids, self.task, held, self.readers)
            if self._pool is None:
                done: Future[Window] = Future()
                done.set_result(_read_after(*args))
                self._windows[key] = done
            else:
                self._windows[key] = self._pool.submit(_read_after, *args)
        return self._windows[key]

    def _prefetch(self, step: int, last: tuple[int, int]) -> None:
        """Read ahead, in the order the stream visits them: the window ``step``'s rows (this
        stream's share of them) start in, then the one after ``last``, the window the batch
        before ends in, unless ``step``'s rows start past it. A replica's share may end before
        its batch's last window: the window its next rows start in then comes first, before
        one it needs later or not at all."""
        if self._pool is None:
            return
        first = _cut(self.order.segments(step), self.share)[0]
        start, following = (first.epoch, first.window), self.order.next_window(*last)
        for key in [start] if start > following else [start, following]:
            self._load(*key)

    def _held_bytes(self) -> int:
        """Bytes of the windows read so far and still held."""
        held = [f.result() for f in self._windows.values()
                if f.done() and f.exception() is None]
        rows = {id(w.rows): w.rows for w in held}  # windows may share their rows
        return sum(rows_nbytes(r) for r in rows.values()) + \
            sum(w.index.nbytes for w in held if w.index is not None)

    def _forget_before(self, epoch: int, window: int) -> None:
        for key in [k for k in self._windows if k < (epoch, window)]:
            del self._windows[key]

    def close(self) -> None:
        """Stop the background threads and drop the windows."""
        if self._pool is not None and self._gatherer is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # a gather waits on no more
            self._gatherer.shutdown(wait=True, cancel_futures=True)
            self._pool.shutdown(wait=True)
        self._windows.clear()
        self._ahead = None


def _read_after(index: DataIndex, split: str, shard_ids: list[int], task: Task,
                held: Future[Window] | None, readers: int) -> Window:
    """``Window.read`` with the rows of ``held``, a window whose read was asked for before
    this one's in the same reading thread (so done by now): its shards are not read again,
    also when it was asked for in the same step (a batch that spans epochs of a data set
    within one window). A ``held`` that failed holds nothing."""
    window = None if held is None or _failed(held) else held.result()
    return Window.read(index, split, shard_ids, task, window, readers)


def _failed(future: Future) -> bool:
    """Whether ``future`` ended without a result (raised, or was cancelled)."""
    return future.done() and (future.cancelled() or future.exception() is not None)


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
