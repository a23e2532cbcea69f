"""The Parquet files of a rewritten image data set (``data reshard``, ``data encode``): a new
or empty folder, the class names in every file's footer, row groups of exactly
``data.shard_rows`` rows, ``GROUPS_PER_FILE`` to a file named by its split and number
(``train-00003.parquet``), and every file removed again when the rewrite fails.

A file appears under its name only once it is whole: on a file system it is written under a
hidden name of its own (``.train-00003.parquet.<token>``, which the data index leaves out) and
renamed when closed; an object store's upload shows the object only when it completes. So a
process killed mid-file leaves no file that reads as data, and two writers of the same file (a
task retried while the first still runs) each rename a whole one into place."""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dbparallel.data.row_groups import in_pieces
from dbparallel.data.shards import DataIndex
from dbparallel.data.tables import resolve_path
from dbparallel.errors import DataError, UserError

GROUPS_PER_FILE = 16  # row groups written into one file before the next is started
CLASSES_KEY = b"dbparallel.classes"  # an image folder's class names, by label, as JSON


@dataclass
class Resharded:
    """What ``reshard`` wrote."""

    rows: dict[str, int] = field(default_factory=dict)  # rows of each split
    row_groups: int = 0
    files: list[str] = field(default_factory=list)


def out_metadata(index: DataIndex, split: str) -> dict[bytes, bytes]:
    """What the files written of ``split`` of ``index`` carry in their footer: what the
    footer of the split's first Parquet file holds (pandas' or a hub's metadata), and an
    image folder's class names. Every file of the split carries the same, whichever rows it
    holds and whoever writes it (reshard_parts.py)."""
    kept: dict[bytes, bytes] = {}
    first = next((s for s in index.shards(split) if s.rows), None)
    if first is not None and first.kind == "parquet":
        try:
            fs, path = resolve_path(first.uri)
            kept = dict(pq.read_schema(path, filesystem=fs).metadata or {})
        except (OSError, pa.ArrowException, DataError):  # reading its rows says what is wrong
            kept = {}
    classes = index.meta.get("classes")
    return kept | ({CLASSES_KEY: json.dumps(classes).encode()} if classes else {})


def remove_written(fs: pafs.FileSystem, root: str, names: list[str], created: bool) -> None:
    """Delete the files ``names`` under ``root`` that are there, with the hidden files they
    were written as (``Writer``: those of a writer stopped outright, a task cancelled), and
    the folder where this command ``created`` it: nothing of a failed rewrite is left."""
    wanted = set(names)
    with contextlib.suppress(OSError, pa.ArrowException):
        listed = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        wanted |= {f.base_name for f in listed
                   if f.base_name.startswith(".") and _hidden_of(f.base_name) in wanted}
    for name in sorted(wanted):
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(f"{root.rstrip('/')}/{name}")
    if created:
        with contextlib.suppress(OSError, pa.ArrowException):
            fs.delete_dir(root)


def _hidden_of(name: str) -> str:
    """The file name that the hidden file ``name`` (``.NAME.TOKEN``) is written for."""
    return name[1:].rsplit(".", 1)[0]


def check_empty(fs: pafs.FileSystem, root: str, out: str) -> bool:
    """UserError unless ``out`` is a new or empty folder, which it makes; whether it was
    new."""
    try:
        info = _refused(fs, root, f"--out {out}")
        fs.create_dir(root, recursive=True)
        return info.type == pafs.FileType.NotFound
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"--out {out}: cannot write there: {err}") from None


def check_out(out: str, shown: str) -> None:
    """UserError naming ``out`` as ``shown`` (``--out X``, or a program's ``out='X'``)
    unless it is a new or empty folder; nothing is made."""
    fs, root = resolve_path(out)
    try:
        _refused(fs, root, shown)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{shown}: cannot read there: {err}") from None


def _refused(fs: pafs.FileSystem, root: str, shown: str) -> pafs.FileInfo:
    """What is at ``root``; UserError naming it as ``shown`` where it is a file or a folder
    that holds anything."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise UserError(f"{shown}: is a file; give a new or empty folder")
    if info.type == pafs.FileType.Directory and \
            fs.get_file_info(pafs.FileSelector(root, recursive=False)):
        raise UserError(f"{shown}: is not empty; give a new or empty folder (nothing was "
                        f"written)")
    return info


class Writer:
    """One split's files: row groups of exactly ``shard_rows`` rows (the last may be short),
    ``GROUPS_PER_FILE`` to a file, numbered from ``first_file``."""

    def __init__(self, fs: pafs.FileSystem, root: str, split: str, shard_rows: int,
                 metadata: dict[bytes, bytes], done: Resharded, first_file: int = 0):
        self.fs, self.root, self.split, self.shard_rows = fs, root, split, shard_rows
        self.metadata, self.done = metadata, done
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.groups = first_file * GROUPS_PER_FILE  # row groups of this split written
        self.writer: pq.ParquetWriter | None = None
        self.name = self.temp = ""  # the file being written, and where its bytes go until whole

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
            self.pending, self.pending_rows = [], 0
        if self.writer is not None:
            self._finish()

    def abandon(self) -> None:
        """Close the file being written without its pending rows, and delete it."""
        self.pending, self.pending_rows = [], 0
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.temp)

    def _finish(self) -> None:
        """Close the file being written and put it in place under its name."""
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        path = f"{self.root.rstrip('/')}/{self.name}"
        if self.temp != path:
            self.fs.move(self.temp, path)
        self.done.files.append(self.name)

    def _write(self, rows: pa.Table) -> None:
        if self.groups % GROUPS_PER_FILE == 0:
            if self.writer is not None:
                self._finish()
            self.name = f"{self.split}-{self.groups // GROUPS_PER_FILE:05d}.parquet"
            self.temp = f"{self.root.rstrip('/')}/{self.name}"
            if isinstance(self.fs, pafs.LocalFileSystem):
                self.temp = f"{self.root.rstrip('/')}/.{self.name}.{secrets.token_hex(6)}"
                # (remove_written knows it by that shape)
            schema = rows.schema.with_metadata(self.metadata)
            self.writer = pq.ParquetWriter(self.temp, schema, filesystem=self.fs)
        assert self.writer is not None
        self.writer.write_table(in_pieces(rows), row_group_size=self.shard_rows)
        self.groups += 1
        self.done.row_groups += 1
