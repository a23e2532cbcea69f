"""How much memory a block's data stream holds, known before training starts.

A block holds the window its batches come from and the next one (training/stream.py), as
unpacked rows: 8-bit pixels, integer ids, encoded images at their decoded size. So its data
memory is at most two windows of its largest shards times the bytes of one unpacked row, plus
the whole windows that fit inside one batch (``held_rows``: a batch that spans windows holds
them, and the one before them; only an epoch's last window can be short). A data set within
one window is held once (every epoch shares the rows, with an 8-byte index per row and
window); so is an epoch's first window that is the last one's shards again, in another order
(``data_footprint`` counts its index). Two batches of rows come on top: the step's, gathered
from the windows, and the next step's, gathered ahead while the step trains. The row's size
is measured by unpacking the first rows of the split, which reads only those (a few MiB of a
Parquet row group, a few files of an image folder).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from dbparallel.config import Config, bytes_text
from dbparallel.data.bad_rows import decode_past_bad_rows
from dbparallel.data.shard_reader import read_shard
from dbparallel.data.shards import DataIndex
from dbparallel.errors import BadRows
from dbparallel.host import machine_memory
from dbparallel.tasks.base import Rows, Task

SAMPLE_ROWS = 16  # rows unpacked to measure one row's size
INDEX_BYTES = 8  # an int64 position per row of a window that shares a held window's rows
SMALL_SHARD = 8  # warn when the median shard has under 1/8 of data.shard_rows or the batch


def rows_nbytes(rows: Rows) -> int:
    """Bytes of the tensors of ``rows``."""
    return sum(t.numel() * t.element_size() for t in rows.values())


@dataclass(frozen=True)
class DataFootprint:
    """One block's data memory at most: ``rows`` rows in ``windows`` windows of at most
    ``window_rows`` rows each."""

    row_bytes: int  # one unpacked row
    window_rows: int  # the most rows a window can hold: its largest shards together
    windows: int  # held at once: 2 (the current and the next) or more for a batch that
    # spans windows; 1 when the data fit in one window (every window shares its rows)
    rows: int  # rows of those windows together, at most
    indexes: int = 0  # windows that share those rows, each with an index of its own
    batch_rows: int = 0  # rows of the batches gathered from them: the step's and the next's

    @property
    def window_bytes(self) -> int:
        """Bytes of the windows (and their indexes) alone."""
        shared = self.indexes * INDEX_BYTES * self.window_rows
        return self.rows * self.row_bytes + shared

    @property
    def bytes(self) -> int:
        return self.window_bytes + self.batch_rows * self.row_bytes


def data_footprint(index: DataIndex, task: Task, window_shards: int, batch_size: int,
                   split: str = "train", replicas: int = 1) -> DataFootprint:
    """The most memory a block (or each of its ``replicas``, which read the same windows and
    gather an even share of each batch) streaming ``split`` of ``index`` in batches of
    ``batch_size`` holds in data rows."""
    share = -(-batch_size // replicas)
    sizes = sorted(s.rows for s in index.shards(split))
    window_rows = sum(sizes[-window_shards:])  # a window of the largest shards
    size = row_bytes(index, task, split)
    if len(sizes) <= window_shards:  # one window an epoch: every window shares its rows
        # the windows one batch spans, and the one before its first (not yet forgotten)
        windows = 1 + -(-batch_size // sum(sizes))
        return DataFootprint(size, window_rows, 1, window_rows, windows, 2 * share)
    rows, windows = held_rows(sizes, window_shards, batch_size)
    # epochs of full windows only: an epoch's first window may be the shards of the one
    # before's last in another order, which shares their rows with an index of its own, and
    # may outlive that window (one of every ``k`` windows of the run held at once)
    k = -(-len(sizes) // window_shards)
    shared = -(-windows // k) if window_shards > 1 and len(sizes) % window_shards == 0 else 0
    return DataFootprint(size, window_rows, windows, rows, shared, 2 * share)


def held_rows(sizes: list[int], window_shards: int, batch_size: int) -> tuple[int, int]:
    """(rows, windows): the most rows a stream over shards of ``sizes`` rows (more than one
    window of them) holds at once, in how many windows.

    At a batch the stream holds a run of consecutive windows (training/stream.py): A, the
    window of the previous batch's last row, through Z, the window of this batch's last row,
    or A's successor (read ahead) if that is later. Every window between A and Z lies inside
    the batch, so together they hold at most ``batch_size - 1`` rows and only whole windows
    fit there. An epoch's windows are ``window_shards`` shards each (full) but its last one,
    which may have fewer (short; one in every K windows of the stream). So the most is
    A + Z <= 2 x the largest full window, plus the most whole windows that fit in a batch;
    without such windows, two neighbours (two full ones, or a full and a short one when an
    epoch is two windows)."""
    sizes = sorted(sizes)
    ws, cap = window_shards, batch_size - 1
    k = -(-len(sizes) // ws)  # windows an epoch
    last = len(sizes) - (k - 1) * ws  # shards of an epoch's last window
    full_max, full_min = sum(sizes[-ws:]), sum(sizes[:ws])
    short_max, short_min = sum(sizes[-last:]), sum(sizes[:last])
    short = last < ws
    rows = full_max + (full_max if not short or k >= 3 else short_max)
    fit_full, fit_short = _fit(sizes, ws, cap), _fit(sizes, last, cap)
    between, m = -1, 1
    limit = (batch_size // max(1, sum(sizes)) + 2) * k  # epochs a batch touches, in windows
    while m <= limit:  # m windows strictly inside one batch, h of them short
        shorts = {m // k, -(-m // k)} if short else {0}
        fits = [(m - h) * fit_full + h * fit_short for h in shorts
                if (m - h) * full_min + h * short_min <= cap]
        if not fits:
            break
        between = max(between, min(cap, max(fits)))
        m += 1
    if between < 0:
        return rows, 2
    return max(rows, 2 * full_max + between), m + 1


def _fit(sizes: list[int], shards: int, cap: int) -> int:
    """The most rows a window of ``shards`` of these shards holds within ``cap`` rows (an
    upper bound; exact for one shard)."""
    if shards == 1:
        return max((n for n in sizes if n <= cap), default=0)
    return min(sum(sizes[-shards:]), cap)


def row_bytes(index: DataIndex, task: Task, split: str = "train") -> int:
    """Bytes of one unpacked row, measured on the first rows of ``split`` that unpack (a bad
    row is reported where training or the validation pass meets it; BadRows here, naming
    them, only if every row measured is bad)."""
    shard = next(s for s in index.shards(split) if s.rows)
    read = read_shard(shard, task.columns, index.meta, limit=SAMPLE_ROWS)
    n = min(SAMPLE_ROWS, read.table.num_rows)
    parts, bad = decode_past_bad_rows(
        lambda a, b: task.unpack(read.table.slice(a, b - a)), n, n)
    if parts:  # every unpacked row has one size
        start, stop, rows = parts[0]
        return -(-rows_nbytes(rows) // (stop - start))
    raise BadRows([str(err.at(read.where(row))) for row, err in bad],
                  stopped=len(bad) > 1)  # only those measured: more may follow


def report_footprint(cfg: Config, index: DataIndex, checked: bool | None = None) -> int:
    """Print what a block's stream holds, and return it in bytes (0: no training rows); in
    local mode, warn when it is over half of this machine's memory (a Ray run checks each
    node once its blocks are placed). Warn too when an image folder has fewer classes than
    data.num_classes (``classes_warning``), when the encoded images are not data.image_size
    square, when they are colour and data.channels grey or the other way round, or when
    data.resize shrinks large photos at every read (``header_warnings``), when raw colour
    pixel lists look like the other order than data.pixel_order (``pixel_order_warning``),
    when latents are not scaled to noise.sigma_data (``latent_scale_warning``),
    when the network would be scored on training rows beside a validation split
    (``eval_split_warning``), and when the Parquet row groups are tiny
    (``small_shards_warning``). Where no row measured unpacks, the footprint is left out
    (0) if the validation pass follows (``checked``; default data.validate), which names
    every bad row; else their BadRows is raised here."""
    from dbparallel.tasks import build_task
    from dbparallel.training.data_warnings import (
        classes_warning,
        eval_split_warning,
        header_warnings,
        latent_scale_warning,
        pixel_order_warning,
    )

    # an image folder's class folders (Parquet labels are warned of once the check saw them)
    for warning in (classes_warning(cfg.data.num_classes, names=index.meta.get("classes")),
                    *header_warnings(cfg, index), pixel_order_warning(cfg, index),
                    latent_scale_warning(cfg, index), eval_split_warning(index)):
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    if "train" not in index.present():  # e.g. data check of a test split alone
        return 0
    checked = cfg.data.validate if checked is None else checked
    try:
        footprint = data_footprint(index, build_task(cfg), cfg.data.window_shards,
                                   cfg.train.batch_size, replicas=cfg.runtime.replicas_per_block)
    except BadRows:  # no row measured unpacks: the validation pass names the bad rows
        if not checked:
            raise
        return 0
    print(footprint_line(footprint), flush=True)
    small = small_shards_warning(index, cfg.data.shard_rows, cfg.train.batch_size)
    if small:
        print(f"warning: {small}", file=sys.stderr, flush=True)
    if cfg.runtime.local:  # one block at a time in this process
        warning = footprint_warning(footprint.bytes, 1, machine_memory())
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    return footprint.bytes


def small_shards_warning(index: DataIndex, shard_rows: int, batch_size: int) -> str | None:
    """A warning when the training rows' median Parquet row group has fewer than
    1/SMALL_SHARD of data.shard_rows or of the batch, whichever is smaller: every shard is
    read on its own, and a per-shard cost (finding the row group in the file's footer, which
    grows with the row groups) dominates (row groups of 1 row trained 100x slower). None when
    even one row group of every training row would be that small (one row group, or a few
    rows): a reshard cannot make row groups bigger than the rows there are."""
    shards = index.splits.get("train", ())
    if index.kind != "images" or not shards or any(s.kind != "parquet" for s in shards):
        return None
    median = int(np.median([s.rows for s in shards]))
    least = min(shard_rows, batch_size)
    if median * SMALL_SHARD >= least or sum(s.rows for s in shards) * SMALL_SHARD < least:
        return None
    groups = f"{len(shards):,} Parquet row group{'s' if len(shards) != 1 else ''}"
    return (f"data: the training rows are in {groups} of a median "
            f"{median:,} row{'s' if median != 1 else ''}, far fewer than data.shard_rows="
            f"{shard_rows:,} or train.batch_size={batch_size:,}; each row group is a shard "
            f"read on its own, which makes reading slow. Rewrite the data once in row groups "
            f"of data.shard_rows rows: `dbparallel data reshard DATA --out DIR`")


def footprint_line(footprint: DataFootprint) -> str:
    """What a block holds, in one line."""
    f = footprint
    held = ("one window (the data fit in it)" if f.windows == 1
            else "two windows (the current and the next)" if f.windows == 2
            else f"{f.windows} windows (a batch spans several, and the next is read)")
    if f.windows == 1:
        rows = f"of at most {f.window_rows:,} rows"
    elif f.rows == f.windows * f.window_rows:
        rows = f"of at most {f.window_rows:,} rows each"
    else:  # windows of unequal sizes (an epoch's last one is short)
        rows = f"of at most {f.window_rows:,} rows each, {f.rows:,} rows in all"
    batches = (f" and two batches of {f.batch_rows // 2:,} rows (the step's and the next's)"
               if f.batch_rows else "")
    return (f"data: a block holds {held} {rows}{batches}, x {bytes_text(f.row_bytes)} "
            f"unpacked = {bytes_text(f.bytes)}")


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
