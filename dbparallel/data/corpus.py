"""A text corpus tokenized once into token files: the DataIndex every text block streams.

``corpus_index(data)`` names the corpus by the sha256 of its content (every input byte),
``data.seq_len``, ``data.tokenizer``, ``data.vocab_size`` and ``VERSION``, and builds it on
first use into ``cache_dir()/corpus/<key>/``: ``train.bin``, ``validation.bin`` and
``test.bin`` (each the ids of that split's rows, row-major, ``seq_len`` ids per row, uint8 when
the vocabulary fits 256 ids, else uint16), ``index.json`` and, for BPE, ``tokenizer.json``. A
build writes into a temporary directory renamed into place, so processes building the same
corpus at once are safe (the first rename wins, the others use it). The build streams the
documents (data/text.py) in passes, never holding the corpus:

1. layout: count documents and characters, check every document (UTF-8, JSON, split values);
2. char: collect the characters of the kept rows (the vocabulary, in code-point order);
   bpe: train the tokenizer on the train split's documents;
3. encode every document's parts into its split's token file.

Rows are non-overlapping ``seq_len``-token rows within each part of a document (a document,
or one of its three position splits), the tail shorter than a row dropped; within a split,
documents in order, rows in order. With ``char`` a token is a character, so the rows, splits
and vocabulary are exactly those of the character tables this project used before. With
``bpe`` a token is a BPE token of a few characters, so a row spans more text, and a loss per
token is in bits per token: the text evaluation reports ``bpt`` and converts to ``bpc`` with
the characters of the rows it scores (training/eval/text.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dbparallel.config import DataConfig
from dbparallel.data.cache import cache_dir
from dbparallel.data.shards import SPLITS, DataIndex, Shard
from dbparallel.data.text import (
    PIECE_CHARS,
    WORK_PERIOD,
    Document,
    TextSource,
    position_parts,
    spans,
    text_source,
    work_split,
)
from dbparallel.data.tokenizer import (
    BYTE_SYMBOLS,
    CharCounter,
    CharTokenizer,
    bpe_pieces,
    train_bpe,
)
from dbparallel.errors import DataError

log = logging.getLogger(__name__)

VERSION = 1  # bump when the splits, the rows or the file layout change (invalidates caches)
INDEX_FILE, TOKENIZER_FILE = "index.json", "tokenizer.json"
MAX_IDS = 1 << 16  # token files are uint16 at most
BPE_BATCH = 8  # pieces encoded together (tokenizers encodes a batch in parallel)
BPE_HOLD = 4 * PIECE_CHARS  # characters held back at most while looking for a BPE cut
# characters per training piece: tokenizers buffers 256 pieces of the iterator it trains on
BPE_TRAIN_CHARS = 1 << 12
END = sys.maxsize  # the end of a document whose length is not needed

Part = tuple[str, int, int]  # (split, first character, end character) of a document
PartKey = tuple[int, str]  # (part number, split) of a piece of text


def corpus_index(data: DataConfig) -> DataIndex:
    """The token index of the text corpus named by ``data`` (source shakespeare, text or
    parquet), tokenized into the cache on first use."""
    source = text_source(data)
    content = source.digest()
    folder = cache_dir() / "corpus" / corpus_key(content, data)
    if not (folder / INDEX_FILE).is_file():
        _build(source, content, data, folder)
    return _load(folder, data.shard_rows, source.label)


def corpus_key(content: str, data: DataConfig) -> str:
    """The cache key: the corpus's content (``TextSource.digest``) and everything that shapes
    its token files."""
    blob = json.dumps({"content": content, "seq_len": data.seq_len,
                       "tokenizer": data.tokenizer, "vocab_size": data.vocab_size,
                       "version": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Layout: which split every character goes to
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """What the first pass learns: how many documents (split by work or by position), their
    characters, and the lengths of the few documents that position splits need."""

    documents: int
    characters: int
    head: tuple[tuple[int, str | None], ...]  # (characters, given split), first 13 documents
    work_rows: dict[str, int]  # char rows per split when every document has one split

    def parts(self, i: int, doc: Document) -> list[Part]:
        if doc.split is not None:
            return [(doc.split, 0, END)]
        if self.documents >= WORK_PERIOD:
            return [(work_split(i), 0, END)]
        return position_parts(self.head[i][0])

    def char_rows(self, seq_len: int) -> dict[str, int]:
        """Rows per split with one character per token."""
        if self.documents >= WORK_PERIOD:
            return self.work_rows
        rows = dict.fromkeys(SPLITS, 0)
        for chars, split in self.head:
            for s, a, b in [(split, 0, chars)] if split else position_parts(chars):
                rows[s] += (b - a) // seq_len
        return rows


def _layout(source: TextSource, seq_len: int) -> Layout:
    count = characters = 0
    head: list[tuple[int, str | None]] = []
    rows = dict.fromkeys(SPLITS, 0)
    for i, doc in enumerate(source.documents()):
        chars = sum(len(piece) for piece in doc.pieces)
        rows[doc.split or work_split(i)] += chars // seq_len
        if i < WORK_PERIOD - 1:
            head.append((chars, doc.split))
        count, characters = i + 1, characters + chars
    if not count:
        raise DataError(f"{source.label}: no documents")
    return Layout(count, characters, tuple(head), rows)


def _check_rows(rows: dict[str, int], layout: Layout, seq_len: int) -> None:
    for split in SPLITS:
        if not rows[split]:
            raise DataError(f"the text is too short for data.seq_len={seq_len}: the {split} "
                            f"split has no sequence ({layout.characters} characters)")


# ---------------------------------------------------------------------------------------------
# Streams: (part, split, text) of every document, whole rows of every part
# ---------------------------------------------------------------------------------------------

def _part_texts(source: TextSource, layout: Layout,
                only: str | None = None) -> Iterator[tuple[PartKey, str]]:
    """((part number, split), text) of every part of every document (of split ``only``)."""
    number = 0
    for i, doc in enumerate(source.documents()):
        parts = layout.parts(i, doc)
        if only is None or any(s == only for s, _, _ in parts):  # else never read it
            for k, text in spans(doc.pieces, [(a, b) for _, a, b in parts]):
                if only is None or parts[k][0] == only:
                    yield (number + k, parts[k][0]), text
        number += len(parts)


def _whole_rows(chunks: Iterator[tuple[PartKey, Any]],
                seq_len: int) -> Iterator[tuple[str, Any]]:
    """(split, whole rows) of each part's chunks (str or id arrays); the end of a part short
    of a row is dropped."""
    part, carry = None, None
    for key, chunk in chunks:
        if key != part:
            part, carry = key, chunk[:0]
        chunk = np.concatenate([carry, chunk]) if isinstance(chunk, np.ndarray) \
            else carry + chunk
        full = len(chunk) // seq_len * seq_len
        carry = chunk[full:]
        if full:
            yield key[1], chunk[:full]


# ---------------------------------------------------------------------------------------------
# Build: token files in a temporary directory, renamed into place
# ---------------------------------------------------------------------------------------------

class _TokenFiles:
    """One append-only token file per split."""

    def __init__(self, folder: Path, dtype: np.dtype):
        self.dtype = dtype
        self.files = {s: open(folder / f"{s}.bin", "wb") for s in SPLITS}  # noqa: SIM115
        self.ids = dict.fromkeys(SPLITS, 0)

    def write(self, split: str, ids: np.ndarray) -> None:
        self.files[split].write(ids.astype(self.dtype).data)
        self.ids[split] += len(ids)

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def rows(self, seq_len: int) -> dict[str, int]:
        return {s: n // seq_len for s, n in self.ids.items()}


def _dtype(ids: int) -> np.dtype:
    if ids > MAX_IDS:
        raise DataError(f"data.vocab_size: token files hold at most {MAX_IDS} ids, "
                        f"the tokenizer has {ids}")
    return np.dtype(np.uint8 if ids <= 256 else np.uint16)


def _char_files(source: TextSource, layout: Layout, data: DataConfig,
                out: Path) -> dict[str, Any]:
    _check_rows(layout.char_rows(data.seq_len), layout, data.seq_len)
    counter = CharCounter()
    for _, text in _whole_rows(_part_texts(source, layout), data.seq_len):
        counter.add(text)
    tokenizer = CharTokenizer(counter.vocabulary(data.vocab_size))
    files = _TokenFiles(out, _dtype(tokenizer.vocab_size))
    try:
        for split, text in _whole_rows(_part_texts(source, layout), data.seq_len):
            files.write(split, tokenizer.encode_array(text))
    finally:
        files.close()
    if files.rows(data.seq_len) != layout.char_rows(data.seq_len):
        raise _changed(source)
    return {"vocab": tokenizer.vocab, "vocab_size": tokenizer.vocab_size,
            "dtype": files.dtype.name, "rows": files.rows(data.seq_len)}


def _bpe_files(source: TextSource, layout: Layout, data: DataConfig,
               out: Path) -> dict[str, Any]:
    train = bpe_pieces(_part_texts(source, layout, only="train"), BPE_TRAIN_CHARS, BPE_HOLD)
    tokenizer = train_bpe((text for _, text in train), data.vocab_size)
    tokenizer.save(out / TOKENIZER_FILE)
    files = _TokenFiles(out, _dtype(tokenizer.vocab_size))
    try:
        pieces = bpe_pieces(_part_texts(source, layout), PIECE_CHARS, BPE_HOLD)
        ids = tokenizer.encode_stream(pieces, BPE_BATCH)
        for split, rows in _whole_rows(ids, data.seq_len):
            files.write(split, rows)
    finally:
        files.close()
    _check_rows(files.rows(data.seq_len), layout, data.seq_len)
    return {"tokenizer_file": TOKENIZER_FILE, "vocab_size": tokenizer.vocab_size,
            "dtype": files.dtype.name, "rows": files.rows(data.seq_len)}


def _changed(source: TextSource) -> DataError:
    return DataError(f"{source.label}: the text changed while it was tokenized; run again")


def _build(source: TextSource, content: str, data: DataConfig, folder: Path) -> None:
    if data.tokenizer == "bpe" and not BYTE_SYMBOLS <= data.vocab_size <= MAX_IDS:
        raise DataError(f"data.vocab_size: a byte-level BPE needs {BYTE_SYMBOLS} to {MAX_IDS} "
                        f"ids (every byte plus its merges), got {data.vocab_size}")
    start = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        layout = _layout(source, data.seq_len)
        make = _char_files if data.tokenizer == "char" else _bpe_files
        index = {"version": VERSION, "source": source.label, "seq_len": data.seq_len,
                 "tokenizer": data.tokenizer, "documents": layout.documents,
                 "characters": layout.characters, **make(source, layout, data, tmp)}
        if source.digest() != content:
            raise _changed(source)
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / INDEX_FILE).is_file():
                raise
            # another process built the same corpus first: use theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("tokenized %s (%d characters, %s) in %.1f s into %s", source.label,
             layout.characters, data.tokenizer, time.perf_counter() - start, folder)


def _load(folder: Path, shard_rows: int, label: str) -> DataIndex:
    index = json.loads((folder / INDEX_FILE).read_text())
    seq_len, dtype = int(index["seq_len"]), np.dtype(index["dtype"])
    splits = {}
    for split in SPLITS:
        path, rows = (folder / f"{split}.bin").resolve(), int(index["rows"][split])
        if path.stat().st_size != rows * seq_len * dtype.itemsize:
            raise DataError(f"{path}: {path.stat().st_size} bytes, its index says {rows} rows "
                            f"of {seq_len} {dtype.name}; delete {folder} to rebuild it")
        splits[split] = tuple(Shard("tokens", str(path), min(shard_rows, rows - first),
                                    first_row=first)
                              for first in range(0, rows, shard_rows))
    meta: dict[str, Any] = {"seq_len": seq_len, "dtype": dtype.name, "cached": True,
                            "content": folder.name,  # the corpus key: changed text, new key
                            "tokenizer": index["tokenizer"], "vocab_size": index["vocab_size"]}
    if index["tokenizer"] == "char":
        meta["vocab"] = index["vocab"]
    else:
        meta["tokenizer_file"] = str((folder / index["tokenizer_file"]).resolve())
    return DataIndex("tokens", label, splits, meta)
