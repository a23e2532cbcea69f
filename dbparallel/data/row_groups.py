"""Reading and writing a Parquet row group a piece at a time.

Decoded whole (``ParquetFile.read_row_group``), a row group costs several times its size at
once: for list columns Arrow's peak was about ten times the pixels (256 MiB of uint8 image
lists: 2,593 MiB; benchmarks/parquet_read.py). ``row_group_batches`` decodes about
``PIECE_BYTES`` of rows at a time (10 MiB at the peak for the same row group). A local file is
read through a buffer of ``READ_BUFFER`` bytes as it is decoded. From an object store the row
group's bytes are fetched first, in concurrent ranged requests (Arrow's read-ahead), and then
decoded a piece at a time: that holds the row group's encoded bytes once, and measured faster
than one request after another behind a link with a round-trip time
(benchmarks/object_store_read.py).

A piece's rows are sized from the footer, by what the read columns decode to: per leaf
column, its uncompressed bytes or, for fixed-width values, its values times their width,
whichever is larger (dictionary and run-length encoding make repetitive pixels look small
uncompressed; they decode to full width).

Writing has the same cost the other way: Arrow's Parquet writer converts a chunk of a table at
a time, with levels and values for every list element, so writing a row group handed over as
one chunk grew the process by ten times its size (256 MiB of uint8 image lists: 2,536 MiB;
benchmarks/parquet_write.py). ``in_pieces`` hands it over in chunks of about ``PIECE_BYTES``:
the same rows and row groups, and 365 MiB (the writer keeps the encoded row group).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

PIECE_BYTES = 1 << 20  # decoded bytes of a row group's read columns, about, per piece
READ_BUFFER = 8 << 20  # bytes of a file read at a time


def row_group_batches(f: pa.NativeFile, row_group: int, columns: list[str] | None = None,
                      metadata: pq.FileMetaData | None = None,
                      read_ahead: bool = False) -> Iterator[pa.RecordBatch]:
    """Row group ``row_group`` of the open Parquet file ``f`` (only ``columns``, when given),
    in batches of about ``PIECE_BYTES`` decoded; ``metadata``: the file's footer, when
    already read. The file is read as it is decoded, ``READ_BUFFER`` at a time, or, with
    ``read_ahead`` (an object store), the row group's bytes first, in concurrent requests.
    ArrowInvalid when the file has no such row group."""
    pf = pq.ParquetFile(f, metadata=metadata, buffer_size=0 if read_ahead else READ_BUFFER,
                        pre_buffer=read_ahead)
    if not 0 <= row_group < pf.num_row_groups:
        raise pa.ArrowInvalid(f"no row group {row_group}: the file has {pf.num_row_groups}")
    group = pf.metadata.row_group(row_group)
    size = decoded_bytes(pf.schema_arrow, group, columns)
    rows = max(1, PIECE_BYTES * group.num_rows // max(size, 1))
    yield from pf.iter_batches(batch_size=rows, row_groups=[row_group], columns=columns)


def decoded_bytes(schema: pa.Schema, group: pq.RowGroupMetaData,
                  columns: list[str] | None = None) -> int:
    """About what ``columns`` (all: None) of ``group`` decode to, from the footer alone."""
    kinds = [(field.name, leaf) for field in schema for leaf in _leaves(field.type)]
    if len(kinds) != group.num_columns:  # not the layout expected: count every column
        kinds = [("", None)] * group.num_columns
        columns = None
    total = 0
    for i, (name, leaf) in enumerate(kinds):
        if columns is not None and name not in columns:
            continue
        chunk = group.column(i)
        total += max(chunk.total_uncompressed_size, chunk.num_values * _width(leaf))
    return total


def _leaves(kind: pa.DataType) -> list[pa.DataType]:
    """The value types of ``kind``'s Parquet leaf columns, in file order."""
    if pa.types.is_struct(kind):
        return [leaf for i in range(kind.num_fields) for leaf in _leaves(kind.field(i).type)]
    if pa.types.is_map(kind):
        return _leaves(kind.key_type) + _leaves(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
            pa.types.is_fixed_size_list(kind):
        return _leaves(kind.value_type)
    if pa.types.is_dictionary(kind):
        return [kind.value_type]
    return [kind]


def _width(kind: pa.DataType | None) -> int:
    """Bytes of one value of a fixed-width type (0 for others: binary, strings)."""
    try:
        return max(1, kind.bit_width // 8) if kind is not None else 0
    except ValueError:
        return 0


def in_pieces(table: pa.Table) -> pa.Table:
    """``table`` as chunks of about ``PIECE_BYTES`` (slices, nothing copied), for
    ``ParquetWriter.write_table``: the writer then converts a piece at a time, not a row
    group (see the module's text). Never ``combine_chunks`` a table before writing it."""
    try:
        size = table.nbytes
    except (pa.ArrowException, NotImplementedError):  # view types in older pyarrow
        size = table.get_total_buffer_size()
    rows = max(1, PIECE_BYTES * table.num_rows // max(size, 1))
    return pa.Table.from_batches(table.to_batches(max_chunksize=rows), schema=table.schema)
