"""The index of Parquet image data: one shard per row group, read from the files' footers.

``data.path`` is a Parquet file, a directory of them (searched recursively, in path order) or
an object-store URI of either. Only footers are read (plus a ``split`` column, when there is
one, to count each split's rows), so indexing a data set far larger than memory is cheap and
the driver never holds its rows. Splits come from a ``split`` column, else from the path: a
file or folder named after a split or one of its aliases (``split_of_path``:
``train-00001-of-00004.parquet``, ``test/part-0.parquet`` as Hugging Face datasets lay them
out, ``val/``, ``mnist_test.parquet``), else every row trains. Files whose paths name no split
beside files whose paths do train too, with a warning: they may be held-out rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dbparallel.data.file_names import PARQUET_SUFFIXES, text_file_name
from dbparallel.data.image_folder import IMAGE_EXTENSIONS
from dbparallel.data.images import IMAGE_COLUMN, LABEL_COLUMN, check_schema, image_encoding
from dbparallel.data.shards import SPLIT_NAMES, DataIndex, Shard, split_of_name
from dbparallel.data.splits import SPLIT_COLUMN, split_values
from dbparallel.data.tables import not_found, resolve_path
from dbparallel.errors import DataError, OtherData

log = logging.getLogger(__name__)

VERSION = 1  # bump when the index layout changes


def parquet_files(path: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """The filesystem, the root and the Parquet files under ``path``, sorted by path."""
    fs, where = resolve_path(path)
    try:
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.NotFound:
            raise not_found(path)
        if info.type == pafs.FileType.File:
            return fs, where, [info]
        found = fs.get_file_info(pafs.FileSelector(where, recursive=True))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot reach {path!r}: {err}") from None
    files = sorted((f for f in found if f.type == pafs.FileType.File
                    and f.base_name.endswith(PARQUET_SUFFIXES)
                    and not f.base_name.startswith((".", "_"))), key=lambda f: f.path)
    if not files:
        held = (f"no Parquet files ({', '.join('*' + s for s in PARQUET_SUFFIXES)}) under "
                f"{path!r}{_what_is_there(found)}")
        if _images_among(found):  # another source reads them: a fix for training
            raise OtherData(f"data.path: {held}; a folder of images, a folder per class, is "
                            f"data.source=image_folder", held)
        if any(f.type == pafs.FileType.File and text_file_name(f.base_name) for f in found):
            raise OtherData(f"data.path: {held}; text files are a text corpus: give "
                            f"data.source=text (with a text task: task=mdm, ar or looped)", held)
        raise DataError(f"data.path: {held}")
    return fs, where, files


def _what_is_there(found: list[pafs.FileInfo]) -> str:
    """What a folder without Parquet files holds, for the error that says so: its files'
    suffixes."""
    names = [f.base_name for f in found if f.type == pafs.FileType.File]
    if not names:
        return f": it holds no files{' (only folders)' if found else ''}"
    skipped = [n for n in names if n.endswith(PARQUET_SUFFIXES)]
    if skipped:
        return (f": {skipped[0]!r} and any other name starting with '.' or '_' are skipped "
                f"(hidden or bookkeeping files); rename the data files")
    cased = [n for n in names if n.lower().endswith(PARQUET_SUFFIXES)]
    if cased:
        return (f": {cased[0]!r} and any other name whose suffix is not in lower case are "
                f"skipped; rename the data files")
    suffixes = Counter(PurePosixPath(n).suffix.lower() or "no suffix" for n in names)
    held = ", ".join(f"{s} ({n:,})" for s, n in suffixes.most_common(4))
    more = ", ..." if len(suffixes) > 4 else ""
    return f": it holds {len(names):,} file{'s' if len(names) != 1 else ''}: {held}{more}"


def _images_among(found: list[pafs.FileInfo]) -> bool:
    """Whether a folder without Parquet files holds image files (and no Parquet file
    skipped for its name, whose error says to rename it)."""
    names = [f.base_name.lower() for f in found if f.type == pafs.FileType.File]
    return not any(n.endswith(PARQUET_SUFFIXES) for n in names) and \
        any(n.endswith(IMAGE_EXTENSIONS) for n in names)


def split_of_path(relative: str) -> str | None:
    """The split a folder or the file name names (data/shards.py's SPLIT_NAMES: ``val/``,
    ``valid-00000-of-00001.parquet``, ``mnist_test.parquet``), else None. A file name names
    a split by its whole stem, or by its first or last ``-``/``_``-separated word when no
    word of it names another split (``mnist_train_val`` names none: it is ambiguous)."""
    parts = relative.strip("/").split("/")
    for part in parts[:-1]:
        if split_of_name(part):
            return split_of_name(part)
    stem = parts[-1].split(".")[0]
    if split_of_name(stem):
        return split_of_name(stem)
    words = re.split(r"[-_]", stem)
    named = {split_of_name(w) for w in words} - {None}
    ends = [split_of_name(w) for w in (words[0], words[-1]) if split_of_name(w)]
    return ends[0] if ends and len(named) == 1 else None


def _uri(path: str, original: str) -> str:
    """A URI/path of a file found under ``original`` that resolve_path reads back (same
    scheme and query, e.g. an S3 endpoint)."""
    if "://" not in original:
        return path
    scheme, rest = original.split("://", 1)
    query = f"?{rest.split('?', 1)[1]}" if "?" in rest else ""
    return f"{scheme}://{path}{query}"


def _file_shards(fs: pafs.FileSystem, info: pafs.FileInfo, uri: str, relative: str
                 ) -> tuple[dict[str, list[Shard]], pa.Schema, list, str | None]:
    """(split -> shards, schema, [relative path, size, mtime], the split its path names or
    None; "column" when a split column decides)."""
    try:
        with fs.open_input_file(info.path) as f:
            pf = pq.ParquetFile(f)
            schema, meta = pf.schema_arrow, pf.metadata
            has_split = SPLIT_COLUMN in schema.names
            split_counts = [_split_counts(pf, rg, uri) for rg in range(meta.num_row_groups)] \
                if has_split else None
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{uri}: not readable Parquet: {err}") from None
    try:
        check_schema(schema)
    except DataError as err:
        raise DataError(f"{uri}: {err}") from None
    named = "column" if has_split else split_of_path(relative)
    fixed = named or "train"
    out: dict[str, list[Shard]] = {}
    first = 0
    for rg in range(meta.num_row_groups):
        rows = meta.row_group(rg).num_rows
        counts = split_counts[rg] if split_counts is not None else {fixed: rows}
        for split, n in counts.items():
            if n:
                out.setdefault(split, []).append(Shard(
                    "parquet", uri, n, row_group=rg, first_row=first,
                    split_filter=split if split_counts is not None else ""))
        first += rows
    stat = [relative, info.size, info.mtime_ns]
    return out, schema, stat, named


def _split_counts(pf: pq.ParquetFile, rg: int, uri: str) -> dict[str, int]:
    first = sum(pf.metadata.row_group(i).num_rows for i in range(rg))
    values = split_values(pf.read_row_group(rg, columns=[SPLIT_COLUMN]).column(SPLIT_COLUMN),
                          uri, first)
    names, counts = np.unique(values.to_numpy(zero_copy_only=False), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _same_columns(schemas: list[tuple[str, pa.Schema]]) -> None:
    """Every file's image and label columns have the first file's types (a block's window
    concatenates rows of several files); DataError naming both files otherwise."""
    first_uri, first = schemas[0]
    for uri, schema in schemas[1:]:
        for column in (IMAGE_COLUMN, LABEL_COLUMN):
            want, got = first.field(column).type, schema.field(column).type
            if want != got:
                raise DataError(f"{uri}: column {column!r} is {got}, but {first_uri} has "
                                f"{want}; every file of a data set needs the same column "
                                f"types (rewrite one of them)")


def _all_named(named: list[tuple[str, str | None]]) -> None:
    """A warning when some files name their split by path and others name none (nor have a
    split column): those train, and a held-out file whose name is not recognised would
    otherwise train without a word."""
    with_split = next(((uri, split) for uri, split in named if split not in (None, "column")),
                      None)
    without = [uri for uri, split in named if split is None]
    if with_split and without:
        uri, split = with_split
        more = f" and {len(without) - 1} more" if len(without) > 1 else ""
        log.warning("%s%s: the path names no split, beside files that do (%s is %r), so its "
                    "rows train; if it is held out, name it or a folder above it by its split "
                    "(%s: val/, mnist_test.parquet) or give it a %r column", without[0], more,
                    uri, split, ", ".join(sorted(SPLIT_NAMES)), SPLIT_COLUMN)


def parquet_index(path: str, source: str = "") -> DataIndex:
    """The DataIndex of the Parquet image data at ``path``; DataError naming the file and
    column of the first schema problem."""
    fs, root, files = parquet_files(path)
    base = root.rstrip("/")

    def one(info: pafs.FileInfo) -> tuple[dict[str, list[Shard]], pa.Schema, list, str | None]:
        relative = info.path[len(base):].lstrip("/") or info.base_name
        return _file_shards(fs, info, _uri(info.path, path), relative)

    with ThreadPoolExecutor(8) as pool:  # footers of many object-store files: in parallel
        results = list(pool.map(one, files))
    uris = [_uri(info.path, path) for info in files]
    _same_columns([(uri, r[1]) for uri, r in zip(uris, results, strict=True)])
    _all_named([(uri, r[3]) for uri, r in zip(uris, results, strict=True)])
    splits: dict[str, list[Shard]] = {}
    encodings = set()
    for shards, schema, _, _ in results:
        encodings.add(image_encoding(schema.field("image").type))
        for split, found in shards.items():
            splits.setdefault(split, []).extend(found)
    if not any(s.rows for found in splits.values() for s in found):
        files_of = f"{len(files)} Parquet file{'s' if len(files) != 1 else ''}"
        raise DataError(f"data.path: {path!r} holds no rows ({files_of} of 0 rows)")
    stats = hashlib.sha256(json.dumps([r[2] for r in results]).encode()).hexdigest()[:20]
    meta = {"encoding": "encoded" if encodings == {"encoded"} else "raw",
            "files": len(files), "stat": stats, "version": VERSION}
    return DataIndex("images", source or path,
                     {k: tuple(v) for k, v in splits.items()}, meta)
