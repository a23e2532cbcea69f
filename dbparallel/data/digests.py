"""sha256 of input files, remembered per file by (location, size, modification time).

A text corpus is named by the digest of every byte it holds (data/corpus.py), so a changed
file gets a new cache entry. Hashing a large corpus on every start would cost a full read; a
file whose size and modification time are what they were when it was hashed keeps its digest
(like make and rsync decide). Files without a modification time (some object stores) are
hashed every time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pyarrow.fs as pafs

from dbparallel.data.cache import atomic_path, cache_dir

MEMO_FILE = "file_digests.json"
MAX_ENTRIES = 10_000  # the memo keeps the most recent ones


class DigestMemo:
    """The remembered digests, read once and written once (when changed) for a set of files:
    ``with DigestMemo() as memo: memo.file_digest(...)``."""

    def __enter__(self) -> DigestMemo:
        self.memo, self.changed = _read(), False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.changed:
            _write(dict(list(self.memo.items())[-MAX_ENTRIES:]))

    def file_digest(self, fs: pafs.FileSystem, path: str, digest: Callable[[], bytes]) -> bytes:
        """``digest()`` of the file at ``path`` on ``fs``, or the remembered one when the
        file's size and modification time are unchanged since it was computed."""
        info = fs.get_file_info(path)
        if info.mtime_ns is None or info.size is None:
            return digest()
        # a relative local path names another file in another working directory
        where = os.path.abspath(path) if isinstance(fs, pafs.LocalFileSystem) else path
        key, stamp = f"{fs.type_name}:{where}", [info.size, info.mtime_ns]
        entry = self.memo.get(key)
        if entry and entry["stamp"] == stamp:
            return bytes.fromhex(entry["sha256"])
        value = digest()
        self.memo.pop(key, None)
        self.memo[key] = {"stamp": stamp, "sha256": value.hex()}
        self.changed = True
        return value


def file_digest(fs: pafs.FileSystem, path: str, digest: Callable[[], bytes]) -> bytes:
    """One file's remembered digest (``DigestMemo.file_digest``)."""
    with DigestMemo() as memo:
        return memo.file_digest(fs, path, digest)


def _read() -> dict:
    try:
        return json.loads((cache_dir() / MEMO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write(memo: dict) -> None:
    path = cache_dir() / MEMO_FILE
    tmp = atomic_path(path)
    try:
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: hash again next time
        pass


def blocks_digest(blocks: Iterator[bytes]) -> bytes:
    """sha256 of a stream of byte blocks."""
    import hashlib

    h = hashlib.sha256()
    for block in blocks:
        h.update(block)
    return h.digest()
