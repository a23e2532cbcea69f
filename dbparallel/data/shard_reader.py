"""Reading one shard: its rows as an Arrow table, with where each row came from.

Parquet shards read one row group (the unit Parquet stores together), decoded a few MiB of rows
at a time (``read_pieces``: a window is filled piece by piece, never holding a whole row group
twice); image-folder shards read their files' bytes (decoded when the task unpacks the rows);
token shards slice the token file.
``where(i)`` names the file and row of row ``i``, so a bad row met mid-stream is reported
exactly. A whole split is read shard by shard in data/split_reader.py.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from dbparallel.data.row_groups import row_group_batches
from dbparallel.data.shards import Shard
from dbparallel.data.splits import SPLIT_COLUMN, split_values
from dbparallel.data.tables import resolve_path
from dbparallel.errors import DataError, DataUnreachable

RETRIES = (1.0, 4.0, 16.0)  # seconds before each new attempt at a read that failed to connect

T = TypeVar("T")
FILE_READERS = 16  # image files of a shard read at once (each one object-store request)
TOKENS_COLUMN = "tokens"


@dataclass(frozen=True)
class ShardRows:
    """The rows of one shard (``table``) and each row's row number in its file."""

    shard: Shard
    table: pa.Table
    file_rows: np.ndarray  # (rows,) int64

    def where(self, i: int) -> str:
        """``file row R`` (or the image file) of row ``i``."""
        if self.shard.kind == "files":
            return f"{self.shard.uri.rstrip('/')}/{self.shard.files[i]}"
        return f"{self.shard.uri} row {int(self.file_rows[i])}"


def read_shard(shard: Shard, columns: list[str] | None = None, meta: dict | None = None,
               limit: int | None = None) -> ShardRows:
    """The rows of ``shard`` (only ``columns`` of a Parquet shard, when given; only its first
    ``limit`` rows, when given); token shards need their index's ``meta`` (seq_len, dtype)."""
    return joined(list(read_pieces(shard, columns, meta, limit)))


def joined(pieces: list[ShardRows]) -> ShardRows:
    """Consecutive pieces of one shard as one (their tables chunk by chunk, not copied)."""
    if len(pieces) == 1:
        return pieces[0]
    return ShardRows(pieces[0].shard, pa.concat_tables([p.table for p in pieces]),
                     np.concatenate([p.file_rows for p in pieces]))


def read_pieces(shard: Shard, columns: list[str] | None = None, meta: dict | None = None,
                limit: int | None = None) -> Iterator[ShardRows]:
    """``read_shard``'s rows in consecutive pieces, at least one: a Parquet row group a few
    MiB at a time (``row_groups.row_group_batches``), a shard of image files or token rows
    whole."""
    if shard.kind == "parquet":
        yield from _parquet_pieces(shard, columns, limit)
        return
    if limit is not None:
        shard = _head(shard, limit)
    if shard.kind == "files":
        yield _read_files(shard)
        return
    assert shard.kind == "tokens" and meta is not None
    yield _read_tokens(shard, meta)


def _head(shard: Shard, n: int) -> Shard:
    """The first ``n`` rows of a shard of image files or token rows."""
    if shard.kind == "files":
        return dataclasses.replace(shard, rows=min(n, shard.rows), files=shard.files[:n],
                                   labels=shard.labels[:n])
    return dataclasses.replace(shard, rows=min(n, shard.rows))


def _io(read: Callable[[], T], where: str) -> T:
    """``read()``, retried when the storage fails to answer (``_failed``)."""
    for wait in (*RETRIES, None):
        try:
            return read()
        except (pa.ArrowException, OSError) as err:
            _failed(err, where, wait)
    raise AssertionError("unreachable")


def _failed(err: Exception, where: str, wait: float | None) -> None:
    """Raise what a failed read ``err`` means, or wait ``wait`` seconds before the next
    attempt: a missing file or an unreadable one is the data's problem (DataError at once), a
    failure to connect is not (DataUnreachable once no attempt is left). A local file
    connects to nothing: Arrow's error without an OS error number there is the file's bytes
    refused (a damaged or cut-short file), not worth a retry."""
    local = "://" not in where
    if isinstance(err, PermissionError):
        raise DataError(f"{where}: {err}") from None
    if isinstance(err, FileNotFoundError):
        # a relative path whose first folder is here is read from the right place: the
        # file itself is gone (a class folder renamed, an image deleted)
        relative = local and not os.path.isabs(where) and \
            not os.path.exists(where.split(os.sep)[0])
        why = (f"data.path is relative, and this process runs in {os.getcwd()}: start it "
               f"where the run started, or give data.path as an absolute path or URI every "
               f"node reads; or the data changed" if relative
               else "the data changed since the run indexed them?")
        raise DataError(f"{where}: no such file ({why})") from None
    if isinstance(err, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)) \
            or (local and isinstance(err, OSError) and err.errno is None):
        raise DataError(f"{where}: not readable: {err}") from None
    if wait is None:
        raise DataUnreachable(f"{where}: {err}") from None
    time.sleep(wait)


def _parquet_pieces(shard: Shard, columns: list[str] | None,
                    limit: int | None) -> Iterator[ShardRows]:
    """A Parquet shard's rows, a batch of its row group at a time; a read that fails to
    connect starts again after the rows already yielded."""
    fs, path = resolve_path(shard.uri)
    wanted = None
    if columns is not None:
        wanted = list(columns) + ([SPLIT_COLUMN] if shard.split_filter else [])
    want = shard.rows if limit is None else min(limit, shard.rows)
    remote = not isinstance(fs, pafs.LocalFileSystem)  # an object store: read ahead
    done, kept = 0, 0  # rows of the row group passed on, rows of the shard yielded
    for wait in (*RETRIES, None):
        try:
            with fs.open_input_file(path) as f:
                start = 0
                for batch in row_group_batches(f, shard.row_group, wanted,
                                               read_ahead=remote):
                    first, start = start, start + batch.num_rows
                    if start <= done:  # yielded before the read failed
                        continue
                    table = pa.Table.from_batches([batch]).slice(done - first)
                    piece = _filtered(shard, table, shard.first_row + done, columns)
                    done = start
                    if limit is not None:
                        piece = ShardRows(shard, piece.table.slice(0, want - kept),
                                          piece.file_rows[:want - kept])
                    elif kept + piece.table.num_rows > shard.rows:
                        raise DataError(f"{shard.uri}: row group {shard.row_group} now has "
                                        f"more than {shard.rows} rows, the number the index "
                                        f"says; the file changed since the run indexed it")
                    if piece.table.num_rows:
                        kept += piece.table.num_rows
                        yield piece
                    if kept == want and limit is not None:
                        return
            break
        except (pa.ArrowException, OSError) as err:
            _failed(err, f"{shard.uri} row group {shard.row_group}", wait)
    if kept != shard.rows:
        raise DataError(f"{shard.uri}: row group {shard.row_group} now has {kept} rows, the "
                        f"index says {shard.rows}; the file changed since the run indexed it")


def _filtered(shard: Shard, table: pa.Table, first_row: int,
              columns: list[str] | None) -> ShardRows:
    """Rows of ``shard``'s row group from its file's row ``first_row`` on, only those of the
    shard's split (and without the split column unless asked for)."""
    rows = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    if shard.split_filter:
        # (its values were checked as the data were indexed: aliases such as val read here;
        # one refused now is of a file rewritten since)
        try:
            split = split_values(table.column(SPLIT_COLUMN), shard.uri, first_row)
        except DataError as err:
            raise DataError(f"{err} (the file changed since the run indexed it?)") from None
        keep = pc.fill_null(pc.equal(split, shard.split_filter), False)
        rows = rows[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
        table = table.filter(keep)
        if columns is not None and SPLIT_COLUMN not in columns:
            table = table.drop_columns([SPLIT_COLUMN])
    return ShardRows(shard, table, rows)


def _read_files(shard: Shard) -> ShardRows:
    fs, root = resolve_path(shard.uri)

    def read(name: str) -> bytes:
        def one() -> bytes:
            with fs.open_input_stream(f"{root.rstrip('/')}/{name}") as f:
                return f.read()
        return _io(one, f"{shard.uri.rstrip('/')}/{name}")

    with ThreadPoolExecutor(FILE_READERS) as pool:  # one request each: many in flight
        blobs = list(pool.map(read, shard.files))
    # large_binary: a shard's files may hold over 2 GiB (4,096 photos of 600 KB), past the
    # 32-bit offsets of binary, whose array pyarrow then splits and cannot join again
    table = pa.table({"image": pa.array(blobs, pa.large_binary()),
                      "label": pa.array(list(shard.labels), pa.int64())})
    return ShardRows(shard, table, np.arange(shard.first_row, shard.first_row + shard.rows))


def _read_tokens(shard: Shard, meta: dict) -> ShardRows:
    seq_len, dtype = int(meta["seq_len"]), np.dtype(meta["dtype"])
    fs, path = resolve_path(shard.uri)
    start = shard.first_row * seq_len * dtype.itemsize
    size = shard.rows * seq_len * dtype.itemsize

    def read() -> bytes:
        with fs.open_input_file(path) as f:
            return f.read_at(size, start)

    raw = _io(read, f"{shard.uri} token rows {shard.first_row}..")
    if len(raw) != size:
        raise DataError(f"{shard.uri}: token file is shorter than its index says; the file "
                        f"changed since the run indexed it")
    ids = np.frombuffer(raw, dtype=dtype)
    column = pa.FixedSizeListArray.from_arrays(pa.array(ids), seq_len)
    rows = np.arange(shard.first_row, shard.first_row + shard.rows, dtype=np.int64)
    return ShardRows(shard, pa.table({TOKENS_COLUMN: column}), rows)
