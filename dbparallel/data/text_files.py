"""One input file of a text corpus, read as documents, by format, never held whole.

A file's format is named by its suffix once a compression suffix (``COMPRESSION``: ``.gz``,
``.bz2``, ``.lz4``, ``.zst``) is taken off: ``a.jsonl.gz`` is gzipped JSONL. A text file is one
document, read in blocks of ``READ_BYTES`` and decoded as UTF-8 as it comes; a JSONL file holds
one document per line (field ``text``, optional ``split`` and ``work``); a Parquet file one per
row of its ``text`` column (optional ``split`` and ``work`` columns), a row-group batch at a
time. A JSONL line or a Parquet row is held while it is read. Every error names the file and
the line, row or byte.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dbparallel.data.row_groups import row_group_batches
from dbparallel.data.shards import SPLITS
from dbparallel.data.tables import not_parquet
from dbparallel.errors import DataError

TEXT_COLUMN, SPLIT_COLUMN, WORK_COLUMN = "text", "split", "work"
READ_BYTES = 1 << 16  # bytes per read of a text file
PIECE_CHARS = 1 << 16  # characters per piece of a document held in memory whole
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # .json too: read as one object per line
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
# compressed files are read through their codec (suffix -> pyarrow codec)
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".lz4": "lz4", ".zst": "zstd"}
JSONL_RULE = "JSONL (.jsonl, .ndjson, .json) holds one JSON object per line"


@dataclass(frozen=True)
class Document:
    """One document: its name (for messages), its given split (or None) and its text, piece by
    piece (an iterator to consume once, before the next document)."""

    name: str
    split: str | None
    pieces: Iterator[str]


def file_documents(fs: pafs.FileSystem, path: str, fmt: str) -> Iterator[Document]:
    """The documents of the file at ``path`` of format ``fmt`` (``file_format``), in order."""
    if fmt == "text":
        yield Document(_stem(path), None, _text_pieces(fs, path))
    elif fmt == "jsonl":
        yield from _jsonl_documents(fs, path)
    else:
        yield from _parquet_documents(fs, path)


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


def file_format(path: str) -> str:
    """``text``, ``jsonl`` or ``parquet``, by the name of the file at ``path``."""
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


def file_blocks(fs: pafs.FileSystem, path: str) -> Iterator[bytes]:
    """The bytes of the file at ``path``, uncompressed, in blocks of ``READ_BYTES``."""
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
        for block in file_blocks(fs, path):
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
    for block in file_blocks(fs, path):
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


def missing_text(path: str, names: list[str]) -> DataError:
    """The DataError of a Parquet table of documents without a ``text`` column."""
    return DataError(f"{path}: column {TEXT_COLUMN!r} is missing; the table has {names}: a "
                     f"text task reads the documents from a string column named "
                     f"{TEXT_COLUMN!r}; rename the column that holds them to {TEXT_COLUMN!r}")


def _parquet_documents(fs: pafs.FileSystem, path: str) -> Iterator[Document]:
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            if TEXT_COLUMN not in schema.names:
                raise missing_text(path, schema.names)
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
        raise not_parquet(path, err) from None


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
