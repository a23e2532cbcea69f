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

import contextlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from dbparallel.config import DataConfig
from dbparallel.data.bad_rows import decode_past_bad_rows
from dbparallel.data.decoded_pieces import decoded_pieces
from dbparallel.data.encoded import decode_encoded
from dbparallel.data.images import IMAGE_COLUMN, LABEL_COLUMN
from dbparallel.data.row_groups import in_pieces
from dbparallel.data.shard_reader import ShardRows
from dbparallel.data.shards import DataIndex
from dbparallel.data.tables import resolve_path
from dbparallel.errors import MAX_BAD_ROWS, BadRows, DataError, RowError, UserError

GROUPS_PER_FILE = 16  # row groups written into one file before the next is started
CLASSES_KEY = b"dbparallel.classes"  # an image folder's class names, by label, as JSON


@dataclass
class Resharded:
    """What ``reshard`` wrote."""

    rows: dict[str, int] = field(default_factory=dict)  # rows of each split
    row_groups: int = 0
    files: list[str] = field(default_factory=list)


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
class _Resize:
    """data.resize's rewrite: every image decoded by ``data`` and stored as a PNG."""

    data: DataConfig

    def check(self, rows: pa.Table) -> np.ndarray:
        return decode_encoded(rows.column(IMAGE_COLUMN), self.data, _threads(self.data))

    def rewrite(self, rows: pa.Table, decoded: np.ndarray) -> pa.Table:
        return _as_pngs(rows, decoded, self.data)


def reshard(index: DataIndex, out: str, shard_rows: int, progress: bool = False,
            resize: DataConfig | None = None, rewrite: Rewrite | None = None,
            desc: str = "reshard", ahead: bool = True) -> Resharded:
    """Write every split of ``index`` under ``out`` (an empty or new folder, local or an
    object-store URI) in row groups of ``shard_rows`` rows; with ``resize`` (a DataConfig
    whose ``resize`` is set, of encoded images), every image decoded by it and stored as a
    PNG of its ``image_size``; with ``rewrite``, every piece's rows as it gives them back
    (``data encode``: the images' latents). A bad row a rewrite meets stops the writing;
    the rest are then only decoded, to name every bad row (BadRows, up to MAX_BAD_ROWS).
    ``desc`` names the progress bar. With ``ahead``, the next piece is read and decoded on a
    thread while one is rewritten and written (without: one after the other)."""
    if index.kind != "images":
        raise DataError(f"{index.source}: {NOT_TEXT}")
    if resize is not None and resizes(index, resize):
        rewrite = _Resize(resize)
    fs, root = resolve_path(out)
    created = _check_empty(fs, root, out)
    classes = index.meta.get("classes")
    metadata = {CLASSES_KEY: json.dumps(classes).encode()} if classes else {}
    done = Resharded()
    total = sum(index.num_rows(s) for s in index.present())
    writer, bad = None, []
    try:
        with tqdm(total=total, unit="rows", disable=not progress, desc=desc) as bar:
            for split in index.present():
                writer = _Writer(fs, root, split, shard_rows, metadata, done)
                for piece, decoded in decoded_pieces(
                        index, split, [IMAGE_COLUMN, LABEL_COLUMN],
                        rewrite.check if rewrite is not None else None, ahead):
                    rows = piece.table
                    if rewrite is None:
                        writer.add(rows)
                    elif isinstance(decoded, RowError):  # named with the piece's others
                        bad += _bad_rows(rewrite, rows, piece, MAX_BAD_ROWS - len(bad))
                    elif not bad:
                        try:
                            writer.add(rewrite.rewrite(rows, decoded))
                        except RowError:
                            bad += _bad_rows(rewrite, rows, piece, MAX_BAD_ROWS - len(bad))
                    if len(bad) >= MAX_BAD_ROWS:
                        raise BadRows(bad, stopped=True)
                    bar.update(piece.table.num_rows)
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
        for name in done.files:
            fs.delete_file(f"{root.rstrip('/')}/{name}")
        if created:  # nor the folder it made
            with contextlib.suppress(OSError, pa.ArrowException):
                fs.delete_dir(root)
        raise
    return done


def resizes(index: DataIndex, data: DataConfig) -> bool:
    """Whether ``reshard`` with ``data`` resizes ``index``'s images: data.resize is set and
    they are encoded (raw pixel lists have one size already)."""
    return bool(data.resize) and index.kind == "images" and \
        index.meta.get("encoding") == "encoded"


def _bad_rows(rewrite: Rewrite, rows: pa.Table, piece: ShardRows, limit: int) -> list[str]:
    """Every bad row of ``rows`` (up to ``limit``), named by its file and row, as
    ``rewrite.check`` decodes them."""
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


def _check_empty(fs: pafs.FileSystem, root: str, out: str) -> bool:
    """UserError unless ``out`` is a new or empty folder, which it makes; whether it was
    new."""
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise UserError(f"--out {out}: is a file; give a new or empty folder")
        if info.type == pafs.FileType.Directory and \
                fs.get_file_info(pafs.FileSelector(root, recursive=False)):
            raise UserError(f"--out {out}: is not empty; give a new or empty folder (nothing "
                            f"was written)")
        fs.create_dir(root, recursive=True)
        return info.type == pafs.FileType.NotFound
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"--out {out}: cannot write there: {err}") from None


class _Writer:
    """One split's files: row groups of exactly ``shard_rows`` rows (the last may be short),
    ``GROUPS_PER_FILE`` to a file."""

    def __init__(self, fs: pafs.FileSystem, root: str, split: str, shard_rows: int,
                 metadata: dict[bytes, bytes], done: Resharded):
        self.fs, self.root, self.split, self.shard_rows = fs, root, split, shard_rows
        self.metadata, self.done = metadata, done
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.groups = 0  # row groups of this split written
        self.writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.shard_rows:
            rows = pa.concat_tables(self.pending)
            self._write(rows.slice(0, self.shard_rows))
            rest = rows.slice(self.shard_rows)
            self.pending, self.pending_rows = [rest], rest.num_rows

    def close(self) -> None:
        if self.pending_rows:
            self._write(pa.concat_tables(self.pending))
        self.abandon()  # nothing is pending now

    def abandon(self) -> None:
        """Close the file being written without its pending rows (it is deleted next)."""
        self.pending, self.pending_rows = [], 0
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write(self, rows: pa.Table) -> None:
        if self.groups % GROUPS_PER_FILE == 0:
            if self.writer is not None:
                self.writer.close()
            name = f"{self.split}-{self.groups // GROUPS_PER_FILE:05d}.parquet"
            path = f"{self.root.rstrip('/')}/{name}"
            schema = rows.schema.with_metadata({**(rows.schema.metadata or {}),
                                                **self.metadata})
            self.writer = pq.ParquetWriter(path, schema, filesystem=self.fs)
            self.done.files.append(name)
        assert self.writer is not None
        self.writer.write_table(in_pieces(rows), row_group_size=self.shard_rows)
        self.groups += 1
        self.done.row_groups += 1
