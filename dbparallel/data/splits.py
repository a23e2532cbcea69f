"""Train and evaluation rows of one table, told apart by an optional ``split`` column.

A table without the column is all training data, and evaluation reuses it (the embedded
digits). With it, training reads the ``train`` rows and evaluation the ``test`` rows, so one
shared table carries both to every block and to the assembly.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from dbparallel.data.shards import ALIASES_TEXT, SPLITS, split_of_name
from dbparallel.errors import DataError

SPLIT_COLUMN = "split"


def split_values(column: pa.Array | pa.ChunkedArray, where: str = "",
                 first_row: int = 0) -> pa.Array:
    """A ``split`` column, checked and read as SPLITS: strings, each the name of a split
    (``split_of_name``: ``val`` and ``Validation`` are ``validation``); DataError naming
    ``where`` (a file) and the row (counted from ``first_row``) otherwise."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    at = f"{where}: " if where else ""
    if pa.types.is_dictionary(column.type):  # a pandas category column, written as is
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{at}column {SPLIT_COLUMN!r}: expected strings "
                        f"({', '.join(SPLITS)}), got {column.type}")
    given = column.cast(pa.string())
    if pc.all(pc.fill_null(pc.is_in(given, pa.array(SPLITS)), False)).as_py():
        return given  # (the common case, read as it is)
    names = pc.unique(given).drop_null()
    read = pa.array([split_of_name(name) for name in names.to_pylist()], pa.string())
    column = pc.take(read, pc.index_in(given, names))  # an unknown name, a null: null
    if column.null_count:
        row = pc.index(column.is_null(), True).as_py()
        value = given[row].as_py()
        raise DataError(f"{at}column {SPLIT_COLUMN!r}: row {first_row + row} is "
                        f"{'null' if value is None else repr(value)}; allowed: {ALIASES_TEXT}")
    return column


def _split_values(table: pa.Table) -> pa.Array:
    return split_values(table.column(SPLIT_COLUMN))


def has_split(table: pa.Table, split: str) -> bool:
    """Whether ``table`` has a split column with at least one ``split`` row."""
    if SPLIT_COLUMN not in table.column_names:
        return False
    return bool(pc.any(pc.equal(_split_values(table), split)).as_py())


def split_rows(table: pa.Table, split: str) -> pa.Table:
    """The rows of ``split``; all rows when the table has no split column."""
    if SPLIT_COLUMN not in table.column_names:
        return table
    rows = table.filter(pc.equal(_split_values(table), split))
    if rows.num_rows == 0:
        raise DataError(f"column {SPLIT_COLUMN!r}: no {split!r} rows")
    return rows


def train_rows(table: pa.Table) -> pa.Table:
    """The rows every block trains on."""
    return split_rows(table, "train")


def eval_rows(table: pa.Table) -> pa.Table:
    """The held-out rows the composed network is scored on: test, else the training rows."""
    return split_rows(table, "test") if has_split(table, "test") else train_rows(table)
