"""How much memory a block's data stream holds, known before training starts.

A block holds the window its batches come from and the next one (training/stream.py), as
unpacked rows: 8-bit pixels, integer ids, encoded images at their decoded size. So its data
memory is at most two windows of its largest shards times the bytes of one unpacked row; a
batch larger than the smallest window holds every window it spans, and the one before it. A
data set within one window is held once (every epoch shares the rows, with an 8-byte index per
row and window). The row's size is measured by unpacking the first rows of the split, which
reads only those (a few MiB of a Parquet row group, a few files of an image folder).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dbparallel.config import Config, bytes_text
from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex
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
    windows: int  # held at once: 2 (the current and the next) or more for a batch larger
    # than a window; 1 when the data fit in one window (every window shares its rows)
    indexes: int = 0  # windows that share those rows, each with an index of its own

    @property
    def bytes(self) -> int:
        shared = self.indexes * INDEX_BYTES * self.window_rows
        return self.windows * self.window_rows * self.row_bytes + shared


def data_footprint(index: DataIndex, task: Task, window_shards: int, batch_size: int,
                   split: str = "train") -> DataFootprint:
    """The most memory a block streaming ``split`` of ``index`` in batches of ``batch_size``
    holds in data rows."""
    sizes = sorted(s.rows for s in index.shards(split))
    window_rows = sum(sizes[-window_shards:])  # a window of the largest shards
    last = len(sizes) % window_shards or window_shards  # an epoch's last window may be short
    smallest = sum(sizes[:last])  # the fewest rows a window can have
    # the windows one batch spans, and the one before its first (not yet forgotten)
    windows = 1 + -(-batch_size // smallest)
    size = row_bytes(index, task, split)
    if len(sizes) <= window_shards:  # one window an epoch: every window shares its rows
        return DataFootprint(size, window_rows, 1, windows)
    return DataFootprint(size, window_rows, windows)


def row_bytes(index: DataIndex, task: Task, split: str = "train") -> int:
    """Bytes of one unpacked row, measured on the first rows of ``split`` that unpack (a bad
    row is reported where training or the validation pass meets it; DataError here only if
    every row measured is bad)."""
    shard = next(s for s in index.shards(split) if s.rows)
    read = read_shard(shard, task.columns, index.meta, limit=SAMPLE_ROWS)
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


def report_footprint(cfg: Config, index: DataIndex) -> int:
    """Print what a block's stream holds, and return it in bytes (0: no training rows); in
    local mode, warn when it is over half of this machine's memory (a Ray run checks each
    node once its blocks are placed). Warn too when an image folder has fewer classes than
    data.num_classes."""
    from dbparallel.tasks import build_task

    classes = index.meta.get("classes")  # an image folder's class folders
    if classes and len(classes) < cfg.data.num_classes:
        print(f"warning: data.num_classes={cfg.data.num_classes}, but the data have "
              f"{len(classes)} classes ({', '.join(classes[:5])}"
              f"{', ...' if len(classes) > 5 else ''}): labels {len(classes)}.."
              f"{cfg.data.num_classes - 1} never occur, yet samples and scores cover them; "
              f"set data.num_classes={len(classes)}", file=sys.stderr, flush=True)
    if "train" not in index.present():  # e.g. data check of a test split alone
        return 0
    footprint = data_footprint(index, build_task(cfg), cfg.data.window_shards,
                               cfg.train.batch_size)
    print(footprint_line(footprint), flush=True)
    if cfg.runtime.local:  # one block at a time in this process
        warning = footprint_warning(footprint.bytes, 1, machine_memory())
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    return footprint.bytes


def footprint_line(footprint: DataFootprint) -> str:
    """What a block holds, in one line."""
    f = footprint
    held = ("one window (the data fit in it)" if f.windows == 1
            else "two windows (the current and the next)" if f.windows == 2
            else f"{f.windows} windows (a batch spans several, and the next is read)")
    return (f"data: a block holds {held} of at most {f.window_rows:,} rows x "
            f"{bytes_text(f.row_bytes)} unpacked = {bytes_text(f.bytes)}")


def footprint_warning(per_block: int, blocks: int, memory: float,
                      where: str = "this machine's") -> str | None:
    """A warning when ``blocks`` blocks holding ``per_block`` bytes of data rows each would
    take over half of ``memory`` bytes (``where``: whose memory, for the message)."""
    total = blocks * per_block
    if total <= memory / 2:
        return None
    return (f"data: {blocks} blocks x {bytes_text(per_block)} of data rows = "
            f"{bytes_text(total)}, "
            f"over half of {where} {bytes_text(memory)}; lower data.window_shards, or "
            f"rewrite the data in smaller row groups (`dbparallel data reshard DATA --out DIR "
            f"data.shard_rows=N`)")


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower
    (a container's)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1

