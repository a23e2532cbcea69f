"""Rewriting an image data set as Parquet row groups of ``data.shard_rows`` rows.

A shard is one of the data's Parquet row groups, and a block holds ``data.window_shards``
shards at once: data written as one row group of a million rows (pyarrow's default) makes a
window of millions of rows. An image folder is read file by file, slowly on an object store.
``reshard`` rewrites either, once, as Parquet files of row groups of ``shard_rows`` rows, one
split per file name (``train-00000.parquet``), rows in index order, the image and label
columns as they are (encoded images stay encoded; nothing is decoded or checked: ``dbparallel
data check`` does that). With ``data.resize`` (encoded images only), every image is instead
decoded as training would decode it (turned upright, cut square, resized to
``data.image_size``, in ``data.channels``' colour mode) and stored as a PNG of that size: a
set of large photos is resized once, not at every read of every epoch (``data encode``
rewrites them into latents the same way: data/latent_encoding.py). A bad image stops the
writing; the rest are then only decoded, so that every bad image is named (up to
MAX_BAD_ROWS). It reads a piece of a row group at a time, holds at most one row group being
written and hands it to the writer a piece at a time (``in_pieces``), and reads and decodes
the next piece on a thread while it rewrites one (an encoder on a GPU does not wait for the
CPU's decoding); if it fails part-way it deletes the files it wrote.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from dbparallel.config import DataConfig
from dbparallel.data.bad_rows import decode_past_bad_rows
from dbparallel.data.decoded_pieces import decoded_pieces
from dbparallel.data.encoded import decode_encoded
from dbparallel.data.images import IMAGE_COLUMN, LABEL_COLUMN
from dbparallel.data.parquet_out import (
    CLASSES_KEY,
    Resharded,
    Writer,
    check_empty,
    out_metadata,
    remove_written,
)
from dbparallel.data.shard_reader import ShardRows
from dbparallel.data.shards import DataIndex
from dbparallel.data.tables import resolve_path
from dbparallel.errors import MAX_BAD_ROWS, BadRows, DataError, RowError

COLUMNS = [IMAGE_COLUMN, LABEL_COLUMN]  # what is written of every row


def class_names(index: DataIndex) -> list[str]:
    """The class names of ``index``'s labels, by label: an image folder's (its index records
    them), Fashion-MNIST's, or those ``reshard`` wrote into the Parquet files it made of one
    (read from the first file's footer); none when the data do not name them."""
    if index.meta.get("classes"):
        return [str(c) for c in index.meta["classes"]]
    if index.source == "fashion_mnist":
        from dbparallel.data.fashion import NAMES

        return list(NAMES)
    shard = next((s for split in index.present() for s in index.shards(split)), None)
    if index.kind != "images" or shard is None or shard.kind == "files":
        return []
    try:
        fs, path = resolve_path(shard.uri)
        metadata = pq.read_schema(path, filesystem=fs).metadata or {}
    except (OSError, pa.ArrowException, DataError):  # the data moved: numbers will do
        return []
    return [str(c) for c in json.loads(metadata[CLASSES_KEY])] if CLASSES_KEY in metadata \
        else []


NOT_TEXT = ("only image data sets are resharded; a text corpus is tokenized into shards of "
            "data.shard_rows rows already")


class Rewrite(Protocol):
    """What ``reshard`` does to the image and label rows of each piece it copies, in two
    stages: ``check`` decodes them (RowError at a bad row, counting rows from the first
    given), on a thread of its own while the piece before is rewritten; ``rewrite`` gives
    them back changed (resized, encoded to latents) from what ``check`` decoded. Once a bad
    row is met only ``check`` runs, to name the other bad rows."""

    def check(self, rows: pa.Table) -> object: ...

    def rewrite(self, rows: pa.Table, decoded: object) -> pa.Table: ...


@dataclass
class Resize:
    """data.resize's rewrite: every image decoded by ``data`` and stored as a PNG."""

    data: DataConfig

    def check(self, rows: pa.Table) -> np.ndarray:
        return decode_encoded(rows.column(IMAGE_COLUMN), self.data, _threads(self.data))

    def rewrite(self, rows: pa.Table, decoded: np.ndarray) -> pa.Table:
        return _as_pngs(rows, decoded, self.data)


class Counts(Protocol):
    """What ``reshard`` tells of its progress: ``update(n)``, ``n`` more rows read (a
    progress bar, or lines in a log: training/progress.py)."""

    def update(self, n: int) -> object: ...


def reshard(index: DataIndex, out: str, shard_rows: int, progress: Counts | None = None,
            resize: DataConfig | None = None, rewrite: Rewrite | None = None,
            ahead: bool = True) -> Resharded:
    """Write every split of ``index`` under ``out`` (an empty or new folder, local or an
    object-store URI) in row groups of ``shard_rows`` rows; with ``resize`` (a DataConfig
    whose ``resize`` is set, of encoded images), every image decoded by it and stored as a
    PNG of its ``image_size``; with ``rewrite``, every piece's rows as it gives them back
    (``data encode``: the images' latents). A bad row a rewrite meets stops the writing;
    the rest are then only decoded, to name every bad row (BadRows, up to MAX_BAD_ROWS).
    ``progress`` counts the rows read. With ``ahead``, the next piece is read and decoded on
    a thread while one is rewritten and written (without: one after the other)."""
    rewrite = rewrite_of(index, resize, rewrite)
    fs, root = resolve_path(out)
    created = check_empty(fs, root, out)
    done = Resharded()
    writer, bad = None, []
    try:
        for split in index.present():
            writer = Writer(fs, root, split, shard_rows, out_metadata(index, split),
                            done)
            for piece, decoded in decoded_pieces(index, split, COLUMNS, check_of(rewrite),
                                                 ahead):
                bad += copied(writer, rewrite, piece, decoded, MAX_BAD_ROWS - len(bad),
                              write=not bad)
                if len(bad) >= MAX_BAD_ROWS:
                    raise BadRows(bad, stopped=True)
                if progress is not None:
                    progress.update(piece.table.num_rows)
            if bad:
                writer.abandon()
                continue
            writer.close()
            done.rows[split] = index.num_rows(split)
        if bad:
            raise BadRows(bad)
    except BaseException:  # a failed read, an interrupt: no half-written folder is left
        if writer is not None:
            writer.abandon()
        remove_written(fs, root, done.files, created)
        raise
    return done


def rewrite_of(index: DataIndex, resize: DataConfig | None,
               rewrite: Rewrite | None) -> Rewrite | None:
    """What ``reshard`` does to the rows: ``rewrite``, else data.resize's where ``resize``
    resizes these images, else nothing (the rows are copied as they are)."""
    if index.kind != "images":
        raise DataError(f"{index.source}: {NOT_TEXT}")
    return Resize(resize) if resize is not None and resizes(index, resize) else rewrite


def resize_rewrite(data: DataConfig | None, threads: int = 0) -> Rewrite | None:
    """data.resize's rewrite by ``data`` (None: the rows are copied as they are), decoding on
    ``threads`` threads (0: data.decode_threads): a Ray task of ``data reshard`` makes its
    own."""
    if data is None:
        return None
    return Resize(dataclasses.replace(data, decode_threads=threads) if threads else data)


def copied(writer: Writer, rewrite: Rewrite | None, piece: ShardRows, decoded: object,
           limit: int, write: bool = True) -> list[str]:
    """Hand ``piece``'s rows to ``writer`` as ``rewrite`` gives them back from ``decoded``
    (``decoded_pieces``), unless ``write`` is off (a bad row was met before); its bad rows,
    named by file and row (up to ``limit``)."""
    if isinstance(decoded, RowError):
        return _bad_rows(rewrite, piece.table, piece, limit)
    if not write:
        return []
    if rewrite is None:
        writer.add(piece.table)
        return []
    try:
        writer.add(rewrite.rewrite(piece.table, decoded))
    except RowError:
        return _bad_rows(rewrite, piece.table, piece, limit)
    return []


def check_of(rewrite: Rewrite | None) -> Callable[[pa.Table], object] | None:
    """What decodes the rows for ``rewrite`` (None: nothing, the rows are copied)."""
    return rewrite.check if rewrite is not None else None


def resizes(index: DataIndex, data: DataConfig) -> bool:
    """Whether ``reshard`` with ``data`` resizes ``index``'s images: data.resize is set and
    they are encoded (raw pixel lists have one size already)."""
    return bool(data.resize) and index.kind == "images" and \
        index.meta.get("encoding") == "encoded"


def _bad_rows(rewrite: Rewrite | None, rows: pa.Table, piece: ShardRows, limit: int) -> list[str]:
    """Every bad row of ``rows`` (up to ``limit``), named by its file and row, as
    ``rewrite.check`` decodes them."""
    assert rewrite is not None  # only a rewrite decodes: nothing else finds a bad row
    _, found = decode_past_bad_rows(lambda a, b: rewrite.check(rows.slice(a, b - a)),
                                    rows.num_rows, limit)
    return [str(err.at(piece.where(row))) for row, err in found]


def _threads(data: DataConfig) -> int:
    return data.decode_threads or os.cpu_count() or 1


def _as_pngs(rows: pa.Table, pixels: np.ndarray, data: DataConfig) -> pa.Table:
    """``rows`` with every image replaced by a PNG of its ``pixels`` as ``decode_encoded``
    gave them (turned upright, cut square, resized to ``data.image_size``)."""
    threads = _threads(data)
    c, s = data.channels, data.image_size
    images = pixels.reshape(-1, c, s, s).transpose(0, 2, 3, 1)

    def png(image: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(image[:, :, 0] if c == 1 else image).save(out, "PNG")
        return out.getvalue()

    with ThreadPoolExecutor(threads, thread_name_prefix="encode") as pool:
        pngs = list(pool.map(png, images))
    return rows.set_column(rows.schema.get_field_index(IMAGE_COLUMN), IMAGE_COLUMN,
                           pa.array(pngs, pa.binary()))


