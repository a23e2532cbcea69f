"""A text corpus tokenized once into token files: the DataIndex every text block streams.

``corpus_index(data)`` names the corpus by the sha256 of its content (every input byte),
``data.seq_len``, ``data.tokenizer``, ``data.vocab_size``, ``data.pack`` (when true),
``data.text_field`` (when not ``text`` and the corpus has JSONL or Parquet files) and
``VERSION``, and builds it on first use into ``cache_dir()/corpus/<key>/``: ``train.bin``,
``validation.bin`` and ``test.bin`` (each the ids of that split's rows, row-major, ``seq_len``
ids per row, uint8 when the vocabulary fits 256 ids, else uint16), ``index.json`` and, for
BPE, ``tokenizer.json`` and ``train_ids.json`` (the ids the train split holds: generation
draws only those, data/tokenizer.py); the token files are written by data/token_files.py. A
build writes into a temporary directory renamed into place, so processes building the same
corpus at once are safe (the first rename wins, the others use it); the next look-up of the
corpus removes those of killed builds (data/build_dirs.py). The build streams the
documents (data/text.py) in passes, never holding the corpus:

1. layout: count documents and characters, check every document (UTF-8, JSON, split values);
2. char: collect the characters of the kept rows (the vocabulary, in code-point order);
   bpe: train the tokenizer on the train split's documents;
3. encode every document's parts into its split's token file.

Rows are non-overlapping ``seq_len``-token rows within each part of a document (a document,
or one of its three position splits), the tail shorter than a row dropped; within a split,
documents in order, rows in order. With ``data.pack`` the parts of a split are joined in
order, each after the first preceded by ``SEPARATOR``, and cut into rows across them (only
the split's last tail is dropped): for corpora of documents shorter than a row. Without it, a
build that drops more than ``DROP_WARN`` of a split's text in tails says so (one warning). A
split with text but no row is an error; the validation and test splits may be absent (no
document in them): then they hold no row. With ``char`` a token is a character, so the rows, splits
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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dbparallel.config import DataConfig
from dbparallel.data.bpe_pieces import bpe_pieces
from dbparallel.data.build_dirs import BUILDER_FILE, build_dir, remove_abandoned
from dbparallel.data.cache import cache_dir
from dbparallel.data.corpus_layout import Layout, check_rows, layout_of, warn_dropped
from dbparallel.data.shards import SPLITS, DataIndex, Shard
from dbparallel.data.text import TextSource, spans, text_source
from dbparallel.data.text_files import PIECE_CHARS
from dbparallel.data.token_files import MAX_IDS, TokenFiles, token_dtype, train_ids, write_ids
from dbparallel.data.tokenizer import (
    BYTE_SYMBOLS,
    TRAIN_IDS_FILE,
    CharCounter,
    CharTokenizer,
    train_bpe,
    warn_fewer_ids,
)
from dbparallel.errors import DataError

log = logging.getLogger(__name__)

VERSION = 1  # bump when the splits, the rows or the file layout change (invalidates caches)
INDEX_FILE, TOKENIZER_FILE = "index.json", "tokenizer.json"
BPE_BATCH = 8  # pieces encoded together (tokenizers encodes a batch in parallel)
BPE_HOLD = 4 * PIECE_CHARS  # characters held back at most while looking for a BPE cut
# characters per training piece: tokenizers buffers 256 pieces of the iterator it trains on
BPE_TRAIN_CHARS = 1 << 12
SEPARATOR = "\n"  # data.pack: between the documents (parts) of a split

PartKey = tuple[int, str]  # (part number, split) of a piece of text


def corpus_index(data: DataConfig) -> DataIndex:
    """The token index of the text corpus named by ``data`` (source shakespeare, text or
    parquet), tokenized into the cache on first use."""
    source = text_source(data)
    content = source.digest()
    folder = cache_dir() / "corpus" / corpus_key(content, data, source.reads_field())
    remove_abandoned(folder)  # the temporary folders of killed builds of this corpus
    if not (folder / INDEX_FILE).is_file():
        _build(source, content, data, folder)
    index = _load(folder, data.shard_rows, source.label)
    if data.tokenizer == "bpe":  # said of a cached tokenizer too, not only as it is learned
        warn_fewer_ids(source.label, index.meta["vocab_size"], data.vocab_size)
    return index


def corpus_key(content: str, data: DataConfig, reads_field: bool = True) -> str:
    """The cache key: the corpus's content (``TextSource.digest``) and everything that shapes
    its token files; data.text_field where the corpus ``reads_field`` (has JSONL or Parquet
    files: another field of the same files is other text)."""
    key: dict[str, Any] = {"content": content, "seq_len": data.seq_len,
                           "tokenizer": data.tokenizer, "vocab_size": data.vocab_size,
                           "version": VERSION}
    if data.pack:  # only when set: unpacked corpora keep the keys they always had
        key["pack"] = True
    if reads_field and data.text_field != DataConfig.text_field:  # likewise the default's
        key["text_field"] = data.text_field
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Streams: (part, split, text) of every document, whole rows of every part
# ---------------------------------------------------------------------------------------------

def _part_texts(source: TextSource, layout: Layout, only: str | None = None,
                pack: bool = False) -> Iterator[tuple[PartKey, str]]:
    """((part number, split), text) of every part of every document (of split ``only``);
    with ``pack``, a part's text after the first of its split starts with SEPARATOR."""
    number, started, last = 0, set[str](), None
    for i, doc in enumerate(source.documents()):
        parts = layout.parts(i, doc)
        if only is None or any(s == only for s, _, _ in parts):  # else never read it
            for k, text in spans(doc.pieces, [(a, b) for _, a, b in parts]):
                key = (number + k, parts[k][0])
                if only is not None and key[1] != only:
                    continue
                if pack and key != last:  # a part's first text (its texts come in a run)
                    text = SEPARATOR + text if key[1] in started else text
                    started.add(key[1])
                    last = key
                yield key, text
        number += len(parts)


def _whole_rows(chunks: Iterator[tuple[PartKey, Any]], seq_len: int, pack: bool = False,
                counts: dict[str, list[int]] | None = None) -> Iterator[tuple[str, Any]]:
    """(split, whole rows) of the chunks (str or id arrays) of each part, or with ``pack`` of
    each split; the end of a part (of a split) short of a row is dropped. ``counts[split]``
    (if given) adds up [read, kept] characters or ids."""
    carry: dict[Any, Any] = {}
    for key, chunk in chunks:
        slot = key[1] if pack else key
        if slot not in carry:
            if not pack:
                carry.clear()  # a new part: the last one's tail is dropped
            carry[slot] = chunk[:0]
        read = len(chunk)
        chunk = np.concatenate([carry[slot], chunk]) if isinstance(chunk, np.ndarray) \
            else carry[slot] + chunk
        full = len(chunk) // seq_len * seq_len
        carry[slot] = chunk[full:]
        if counts is not None:
            counts[key[1]][0] += read
            counts[key[1]][1] += full
        if full:
            yield key[1], chunk[:full]


# ---------------------------------------------------------------------------------------------
# Build: token files in a temporary directory, renamed into place
# ---------------------------------------------------------------------------------------------

def _char_files(source: TextSource, layout: Layout, data: DataConfig,
                out: Path) -> dict[str, Any]:
    T, pack = data.seq_len, data.pack
    check_rows(layout.char_rows(T, pack), layout, data,
               {s: t.char_rows(T, True) > 0 for s, t in layout.splits.items()})
    counter = CharCounter()
    for _, text in _whole_rows(_part_texts(source, layout, pack=pack), T, pack):
        counter.add(text)
    tokenizer = CharTokenizer(counter.vocabulary(data.vocab_size))
    files = TokenFiles(out, token_dtype(tokenizer.vocab_size))
    try:
        for split, text in _whole_rows(_part_texts(source, layout, pack=pack), T, pack,
                                       files.counts):
            files.write(split, tokenizer.encode_array(text))
    finally:
        files.close()
    if files.rows(T) != layout.char_rows(T, pack):
        raise _changed(source)
    warn_dropped(source.label, files.counts, layout, data)
    return {"vocab": tokenizer.vocab, "vocab_size": tokenizer.vocab_size,
            "dtype": files.dtype.name, "rows": files.rows(T)}


def _bpe_files(source: TextSource, layout: Layout, data: DataConfig,
               out: Path) -> dict[str, Any]:
    T, pack = data.seq_len, data.pack
    train = bpe_pieces(_part_texts(source, layout, only="train", pack=pack), BPE_TRAIN_CHARS,
                       BPE_HOLD)
    tokenizer = train_bpe((text for _, text in train), data.vocab_size)
    tokenizer.save(out / TOKENIZER_FILE)
    files = TokenFiles(out, token_dtype(tokenizer.vocab_size))
    try:
        pieces = bpe_pieces(_part_texts(source, layout, pack=pack), PIECE_CHARS, BPE_HOLD)
        ids = tokenizer.encode_stream(pieces, BPE_BATCH)
        for split, rows in _whole_rows(ids, T, pack, files.counts):
            files.write(split, rows)
    finally:
        files.close()
    check_rows(files.rows(T), layout, data,  # about one separator token between documents
               {s: (files.counts[s][0] + max(t.documents - 1, 0)) >= T
                for s, t in layout.splits.items()})
    write_ids(out / TRAIN_IDS_FILE, np.flatnonzero(files.in_train))
    warn_dropped(source.label, files.counts, layout, data)
    return {"tokenizer_file": TOKENIZER_FILE, "vocab_size": tokenizer.vocab_size,
            "dtype": files.dtype.name, "rows": files.rows(T)}


def _changed(source: TextSource) -> DataError:
    return DataError(f"{source.label}: the text changed while it was tokenized; run again")


def _build(source: TextSource, content: str, data: DataConfig, folder: Path) -> None:
    if data.tokenizer == "bpe" and not BYTE_SYMBOLS <= data.vocab_size <= MAX_IDS:
        raise DataError(f"data.vocab_size: a byte-level BPE needs {BYTE_SYMBOLS} to {MAX_IDS} "
                        f"ids (every byte plus its merges), got {data.vocab_size}")
    start = time.perf_counter()
    tmp = build_dir(folder)
    try:
        layout = layout_of(source, data.seq_len)
        make = _char_files if data.tokenizer == "char" else _bpe_files
        index = {"version": VERSION, "source": source.label, "seq_len": data.seq_len,
                 "tokenizer": data.tokenizer, "pack": data.pack,
                 "documents": layout.documents, "characters": layout.characters,
                 "split_characters": {s: t.characters for s, t in layout.splits.items()},
                 **make(source, layout, data, tmp)}
        if source.digest() != content:
            raise _changed(source)
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
        (tmp / BUILDER_FILE).unlink()
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
        if not (folder / TRAIN_IDS_FILE).is_file():
            train_ids(folder, dtype)
    return DataIndex("tokens", label, splits, meta)
