"""One input file of a text corpus, read as documents, by format, never held whole.

A file's format is named by its suffix (file_names.py) once a compression suffix (``.gz``,
``.bz2``, ``.lz4``, ``.zst``) is taken off: ``a.jsonl.gz`` is gzipped JSONL. A text file is one
document, read in blocks of ``READ_BYTES`` and decoded as UTF-8 as it comes; a JSONL file holds
one document per line (in the string field data.text_field names, ``text`` by default;
optional ``split`` and ``work``); a Parquet file one per row of that column (optional
``split`` and ``work`` columns), a row-group batch at a time. A JSONL line or a Parquet row
is held while it is read. Every error names the file and the line or row (a text file that
is not UTF-8, or holds a NUL: the line and byte; a line or table without the field, the key:
data/document_errors.py).
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dbparallel import errors
from dbparallel.data.document_errors import (
    SPLIT_FIELD,
    WORK_FIELD,
    is_strings,
    jsonl_rule,
    lone_surrogate,
    missing_text,
    not_a_document,
    not_json,
    string_values,
)
from dbparallel.data.file_names import uncompressed
from dbparallel.data.row_groups import row_group_batches
from dbparallel.data.shards import ALIASES_TEXT, split_of_name
from dbparallel.data.tables import not_parquet
from dbparallel.errors import BadRows, DataError

log = logging.getLogger(__name__)
READ_BYTES = 1 << 16  # bytes per read of a text file
PIECE_CHARS = 1 << 16  # characters per piece of a document held in memory whole


@dataclass(frozen=True)
class Document:
    """One document: its name (for messages), its given split (or None) and its text, piece by
    piece (an iterator to consume once, before the next document)."""

    name: str
    split: str | None
    pieces: Iterator[str]


def file_documents(fs: pafs.FileSystem, path: str, fmt: str, folder: str = "",
                   field: str = "text", later: bool = False) -> Iterator[Document]:
    """The documents of the file at ``path`` of format ``fmt`` (``file_format``), in order;
    ``folder``: the folder of files it was found in, if any (named by the advice of an
    error); ``field``: the JSONL field or Parquet column of the documents (data.text_field;
    a text file has none), which JSONL or Parquet files before it (``later``) were read
    with."""
    if fmt == "text":
        yield Document(_stem(path), None, _text_pieces(fs, path, folder))
    elif fmt == "jsonl":
        yield from _jsonl_documents(fs, path, folder, field, later)
    else:
        yield from _parquet_documents(fs, path, folder, field, later)


def _stem(path: str) -> str:
    return PurePosixPath(uncompressed(path)[0]).stem


def file_blocks(fs: pafs.FileSystem, path: str) -> Iterator[bytes]:
    """The bytes of the file at ``path``, uncompressed, in blocks of ``READ_BYTES``."""
    try:
        with fs.open_input_stream(path, compression=uncompressed(path)[1]) as f:
            while block := f.read(READ_BYTES):
                yield block
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot read {path!r}: {err}") from None


def _text_pieces(fs: pafs.FileSystem, path: str, folder: str = "") -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    before = pending = 0  # bytes decoded before this block; bytes the decoder holds back
    lines, block = 0, b""  # newlines decoded before this block
    try:
        for block in file_blocks(fs, path):
            pending = len(decoder.getstate()[0])
            text = decoder.decode(block)
            before += len(block)
            if text:
                if not lines and before == len(block) and text.startswith(BOM):
                    _said_bom(path)
                if NUL in text:  # valid UTF-8, but no text: UTF-16/32 of ASCII, or binary
                    raise _nul(path, text, lines, before - len(block) - pending, folder)
                lines += text.count("\n")
                yield text
        pending, block = len(decoder.getstate()[0]), b""
        if text := decoder.decode(b"", final=True):
            yield text
    except UnicodeDecodeError as err:  # err.start counts from the held-back bytes (no "\n")
        line = lines + block[:max(err.start - pending, 0)].count(b"\n") + 1
        move, at = _move_out(folder), before - pending + err.start
        # the file's first block (``before`` counts the blocks decoded before this one): a
        # UTF-32BE mark stops decoding at byte 2, after two NULs that are UTF-8
        wide = (" (it opens with a UTF-16 or UTF-32 byte order mark; e.g. iconv -f UTF-16 -t "
                "UTF-8)" if not before and block.startswith(WIDE_BOMS) else "")
        raise DataError(f"data.path: {path!r} is not UTF-8 text (line {line}, byte {at}): save "
                        f"it as UTF-8{wide}{move}") from None


NUL = "\x00"
WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16/32, either order


def _nul(path: str, text: str, lines: int, start: int, folder: str) -> DataError:
    """The DataError of a text file holding a NUL character, in ``text``, which starts at
    byte ``start`` after ``lines`` newlines: UTF-16 or UTF-32 text of ASCII characters (a
    NUL in every wide character) decodes as UTF-8 and would train as text."""
    head = text[:text.index(NUL)]
    line, byte = lines + head.count("\n") + 1, start + len(head.encode("utf-8"))
    return DataError(f"data.path: {path!r} holds a NUL character (line {line}, byte {byte}), "
                     f"which no text has: UTF-16 or UTF-32 text, or a binary file; save it "
                     f"as UTF-8 (iconv -f ITS_ENCODING -t UTF-8){_move_out(folder)}")


def _move_out(folder: str) -> str:
    """The advice to move a file that is no text out of the ``folder`` it was found in."""
    return (f", or move it out of {folder!r} if it is no text (every file of a folder but "
            f"JSONL and Parquet files is read as one text document)" if folder else "")


BOM = "\ufeff"  # a UTF-8 byte order mark, read as a character of the text
_BOMS_SAID: set[str] = set()


def _said_bom(path: str) -> None:
    """Warn, once per file and process, that ``path`` opens with a byte order mark: it is
    read as text (a character of its vocabulary), as a corpus built before read it."""
    if path not in _BOMS_SAID:
        _BOMS_SAID.add(path)
        log.warning("%s opens with a UTF-8 byte order mark (U+FEFF), which is read as a "
                    "character of the text: save the file without it (e.g. sed -i "
                    "'1s/^\\xEF\\xBB\\xBF//' FILE) to keep it out of the vocabulary", path)


def _slices(text: str) -> Iterator[str]:
    for i in range(0, len(text), PIECE_CHARS):
        yield text[i:i + PIECE_CHARS]


def _split_value(value: object, where: str) -> str | None:
    """The split a document's ``split`` value names (``split_of_name``: ``val`` is
    ``validation``), None where it has none; DataError naming ``where`` otherwise."""
    if value is None:
        return None
    split = split_of_name(value) if isinstance(value, str) else None
    if split is None:
        raise DataError(f"{where} is {value!r}, expected one of {ALIASES_TEXT}")
    return split


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


def _jsonl_documents(fs: pafs.FileSystem, path: str, folder: str, field: str,
                     later: bool) -> Iterator[Document]:
    """The documents of a JSON Lines file. A first line that is not JSON, or a line that
    holds no document, stops it at once (the file is of another kind); other lines that are
    not JSON (cut short, say) are all named once the file is read, up to MAX_BAD_ROWS."""
    first, broken = True, []
    for number, line in _jsonl_lines(fs, path):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if first:
                raise not_json(where, err, line, first, field) from None
            broken.append(not_json(where, err, line, first, field))
            if len(broken) == errors.MAX_BAD_ROWS:
                break
            continue
        try:
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise not_a_document(where, row, first, folder, field, later)
            if err := lone_surrogate(where, row[field], field):
                raise err
            split = _split_value(row.get(SPLIT_FIELD), f"{where}: field {SPLIT_FIELD!r}")
        except DataError as err:  # it stops here, with the broken lines before it named
            if broken:
                raise _broken_lines(broken, field, err) from None
            raise
        first = False
        name = str(row.get(WORK_FIELD, f"{_stem(path)}:{number}"))
        yield Document(name, split, _slices(row[field]))
    if len(broken) == 1:
        raise broken[0]
    if broken:
        raise _broken_lines(broken, field)


def _broken_lines(broken: list[DataError], field: str,
                  stop: DataError | None = None) -> BadRows:
    """The lines of a JSON Lines file that are not JSON, each said without the rule (the head
    says it once), then the error ``stop`` of the line the reading stopped at, if any."""
    rule = f" ({jsonl_rule(field)})"
    rows = [str(e).removesuffix(rule) for e in broken] + ([str(stop)] if stop else [])
    return BadRows(rows, stopped=len(broken) == errors.MAX_BAD_ROWS, what="lines",
                   note=jsonl_rule(field))


def _string_column(schema: pa.Schema, column: str, path: str, field: str) -> bool:
    """Whether ``column`` is present; DataError when it is not a string column (the text
    ``field`` named with its key), also one of strings dictionary-encoded (a pandas category
    column, written as is). A ``work`` column, a name only, may hold any values."""
    if column not in schema.names:
        return False
    if column == WORK_FIELD and column != field:
        return True
    if not is_strings(schema.field(column).type):
        kind = schema.field(column).type
        key = f" (data.text_field={field})" if column == field else ""
        raise DataError(f"{path}: column {column!r}{key}: expected strings, got {kind}")
    return True


def _parquet_documents(fs: pafs.FileSystem, path: str, folder: str, field: str,
                       later: bool) -> Iterator[Document]:
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            if field not in schema.names:
                raise missing_text(path, schema, field, folder, later)
            columns = [c for c in (field, SPLIT_FIELD, WORK_FIELD)
                       if _string_column(schema, c, path, field)]
            row, nulls = 0, _nulls(pf.metadata, field)
            for group in range(pf.num_row_groups):
                for batch in row_group_batches(
                        f, group, columns, pf.metadata,
                        read_ahead=not isinstance(fs, pafs.LocalFileSystem)):
                    yield from _table_documents(pa.Table.from_batches([batch]), row, path,
                                                field, nulls)
                    row += batch.num_rows
    except (pa.ArrowException, OSError) as err:
        raise not_parquet(path, err) from None


def _nulls(metadata: pq.FileMetaData, column: str) -> int | None:
    """The null rows of the top-level ``column`` in all, from the row groups' statistics
    (no data read); None where a row group does not record them."""
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if column not in names:
        return None
    at, total = names.index(column), 0
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(at).statistics
        if stats is None or not stats.has_null_count:
            return None
        total += stats.null_count
    return total


def _table_documents(table: pa.Table, first_row: int, path: str, field: str,
                     nulls: int | None = None) -> Iterator[Document]:
    """The documents of some rows of a Parquet file, whose first is row ``first_row``, their
    text in column ``field`` (of which ``nulls`` rows of the file are null, where known)."""
    def values(column: str) -> list[object]:
        return string_values(table.column(column), first_row, f"{path}: column {column!r}")

    texts = values(field)
    splits = values(SPLIT_FIELD) if SPLIT_FIELD in table.column_names else None
    works = (values(WORK_FIELD) if WORK_FIELD in table.column_names and WORK_FIELD != field
             else None)
    for i, text in enumerate(texts):
        row = first_row + i
        if text is None:
            many = f" ({nulls:,} rows of the file are null)" if nulls and nulls > 1 else ""
            raise DataError(f"{path}: column {field!r}: row {row} is null{many}: a row holds "
                            f"one document; drop the rows without one (pandas: "
                            f"df.dropna(subset=[{field!r}]))")
        # a null split is none, as a JSONL line's null or missing field (the work split)
        split = (_split_value(splits[i], f"{path}: column {SPLIT_FIELD!r}: row {row}")
                 if splits is not None else None)
        name = str(works[i]) if works is not None and works[i] is not None else f"row{row}"
        yield Document(name, split, _slices(text))
