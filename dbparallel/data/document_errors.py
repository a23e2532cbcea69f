"""What a JSONL line or a Parquet table of a text corpus that holds no document is told: the
file, the line, what it holds instead, and the fix, first of all the ``data.text_field`` that
names the field (JSONL) or column (Parquet) of the documents.

A field or column missing is ``OtherData`` (the data are other than the key says): a command
that reads data for a network already trained (eval/sample --data) words its own fix, as the
run's field cannot change (cli_network_data.py).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

import pyarrow as pa

from dbparallel.errors import DataError, OtherData
from dbparallel.shell import shell_path

SPLIT_FIELD, WORK_FIELD = "split", "work"  # a document's optional split and name
JSON_KINDS = {list: "a JSON array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}
LISTED = 8  # field or column names an error lists at most
SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: no character alone


def jsonl_rule(field: str) -> str:
    """What a JSON Lines file holds, in terms of data.text_field=``field``."""
    return (f"JSON Lines (.jsonl, .ndjson, .json) hold one JSON object per line, the document "
            f"in its string field {json.dumps(field)} (data.text_field={field})")


def _jq(program: str) -> str:
    """A jq command that rewrites FILE with ``program`` (quoted for a POSIX shell)."""
    return f"jq -c {shell_path(program)} FILE > FILE.jsonl"


def not_json(where: str, err: ValueError, line: bytes, first: bool, field: str) -> DataError:
    """The DataError of a line that is not JSON; a file's first line that opens a JSON
    document (``[``, ``{``) is told it looks like one document spanning lines."""
    # a byte order mark (Windows Notepad writes one) before the "[" or "{"
    start = line.lstrip().removeprefix(codecs.BOM_UTF8).lstrip()[:1].decode("ascii", "replace")
    if not first or start not in "[{":
        return DataError(f"{where} is not JSON: {err} ({jsonl_rule(field)})")
    convert = "; convert it with `jq -c '.[]' FILE > FILE.jsonl`" if start == "[" else ""
    name = json.dumps(field)
    return DataError(f"{where} is not JSON ({err}): the file looks like one JSON document "
                     f"spanning lines (it starts with {start!r}); .jsonl, .ndjson and .json "
                     f"files are read as JSON Lines: one JSON object per line with a string "
                     f'field {name} (data.text_field={field}), like {{{name}: "..."}}'
                     f'{convert}')


def not_a_document(where: str, row: object, first: bool, folder: str, field: str,
                   later: bool = False) -> DataError:
    """The DataError of a JSON line that is no object with a string field ``field``
    (data.text_field): what it is instead, or which fields it has; a file's first line that
    is an array is told how to convert it, a file of a ``folder`` that it may move out (and,
    ``later`` than other files read with the field, how to rename its own)."""
    advice = [f"or move the file out of {folder!r} if it holds no documents"] if folder else []
    rule = jsonl_rule(field)
    if not isinstance(row, dict):
        kind = JSON_KINDS.get(type(row), type(row).__name__)
        if first and isinstance(row, list):
            advice.insert(0, "the file looks like one JSON array; convert it with "
                             "`jq -c '.[]' FILE > FILE.jsonl`")
        return DataError(f"{where} is {kind}, expected an object "
                         f"({'; '.join([rule, *advice])})")
    if field in row:
        kind = JSON_KINDS.get(type(row[field]), "an object")
        return DataError(f"{where}: field {json.dumps(field)} is {kind}, expected a string "
                         f"({'; '.join([rule, *advice])})")
    name = json.dumps(field)
    found = f"{where} has no {name} field"
    strings = [k for k, v in row.items() if isinstance(v, str)
               and k not in (SPLIT_FIELD, WORK_FIELD)]
    names = ", ".join(json.dumps(k) for k in list(row)[:LISTED]) + \
        (", ..." if len(row) > LISTED else "")
    has = (f"it has {names}{'' if strings else ', none of them a string'}" if row
           else "it has no fields")
    fixes = [_field_fix(strings[0], field, first, folder, later)] if strings else []
    fixes += advice
    return OtherData(f"{found} (data.text_field={field}); {has}"
                     f"{': ' + '; '.join(fixes) if fixes else ''}", found)


def _field_fix(other: str, field: str, first: bool, folder: str, later: bool) -> str:
    """What reads the documents of a JSON line in its string field ``other`` in place of
    ``field``: data.text_field, on the first line of the first file read with it; a jq
    command where the field is right for the lines before it (not ``first``) or the files
    before it (``later``)."""
    name, json_other = json.dumps(field), json.dumps(other)
    rename = f".[{name}] = .[{json_other}] | del(.[{json_other}])"
    if not first:
        return (f"the lines before it have {name}: give every line its document in it, e.g. "
                f"{_jq(f'if has({name}) then . else {rename} end')}")
    if later:
        return (f"the files of {folder!r} before it have {name}: rename the field in this "
                f"file, e.g. {_jq(rename)}")
    every = f" of every JSONL and Parquet file of {folder!r}" if folder else ""
    return (f"set {shell_path('data.text_field=' + other)} if that field holds the "
            f"documents{every}")


def is_strings(kind: pa.DataType) -> bool:
    """Whether a Parquet column of type ``kind`` holds strings: plain, large, or
    dictionary-encoded (a pandas category column, written as is)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def string_columns(schema: pa.Schema) -> list[str]:
    """The names of the string columns of a Parquet table's ``schema``."""
    return [f.name for f in schema if is_strings(f.type)]


def missing_text(path: str, schema: pa.Schema, field: str, folder: str = "",
                 later: bool = False) -> OtherData:
    """The error of a Parquet table of documents without the column ``field``
    (data.text_field): its string columns and the data.text_field that reads one; a file of a
    ``folder`` ``later`` than other files read with the field, that it may rename its
    column."""
    found = f"{path}: column {field!r} is missing"
    strings = [c for c in string_columns(schema) if c not in (SPLIT_FIELD, WORK_FIELD)]
    if not strings:
        names = schema.names[:LISTED] + (["..."] if len(schema.names) > LISTED else [])
        return OtherData(f"{found} (data.text_field={field}), and the table has no string "
                         f"column to read documents from (it has {names})", found)
    if later:
        fix = (f"the files of {folder!r} before it have {field!r}: rename the column that "
               f"holds the documents in this file")
    else:
        every = f" of every JSONL and Parquet file of {folder!r}" if folder else ""
        fix = (f"set data.text_field to the column that holds the documents{every}, e.g. "
               f"{shell_path('data.text_field=' + strings[0])}")
    return OtherData(f"{found} (data.text_field={field}); its string columns are {strings}: "
                     f"{fix}", found)


def lone_surrogate(where: str, text: str, field: str) -> DataError | None:
    """The DataError of a JSON line whose document (field ``field``) holds a lone surrogate
    (``"\\ud83d"`` without its pair: an emoji cut in two), which is no character and no
    UTF-8; None where it holds none."""
    found = SURROGATE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    return DataError(f"{where}: field {json.dumps(field)} holds a lone surrogate "
                     f"\\u{code:04x} (character {found.start():,}), half of a UTF-16 pair "
                     f"and no character: write the pair whole (\\ud83d\\ude00 is one emoji) "
                     f"or drop it")


def string_values(column: pa.ChunkedArray, first_row: int, where: str) -> list[object]:
    """The values of a Parquet ``column`` of some rows (the first is row ``first_row`` of its
    file); DataError naming ``where`` (the file and column) and the first row whose string is
    no UTF-8, which Parquet writers do not all check."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        pass
    for row, value in enumerate(_values(column), first_row):
        try:
            value.as_py()
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: row {row} is not UTF-8 text (byte {err.start} of its "
                            f"value): write the column as UTF-8 strings") from None
    raise AssertionError("to_pylist failed on no value")


def _values(column: pa.ChunkedArray) -> Iterator[pa.Scalar]:
    for chunk in column.chunks:
        yield from chunk
